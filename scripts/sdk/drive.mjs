// Upload FILE to a OneDrive path with the official Microsoft Graph JS SDK's
// OneDriveLargeFileUploadTask (it creates the session itself at
// /me/drive/root:/FOLDER/NAME:/createUploadSession, conflictBehavior fail, and uploads 10 x 320 KiB
// ranges), then make a view link twice with createLink (the second must answer the same link).
// Usage: node drive.mjs ORIGIN TOKEN FILE FOLDER NAME. Prints {"id","size","quickXorHash",
// "slices","webUrl","again"} on success.
import fs from "node:fs";
import graph from "@microsoft/microsoft-graph-client";

const { Client, OneDriveLargeFileUploadTask, StreamUpload } = graph;
const [origin, token, file, folder, name] = process.argv.slice(2);
if (!origin || !token || !file || !folder || !name) {
  console.error("usage: node drive.mjs ORIGIN TOKEN FILE FOLDER NAME");
  process.exit(2);
}
// The SDK sends its token only to Graph hosts and to `customHosts`: the sandbox's origin is
// one, its upload URLs are not (sdk-check has them handed out on `localhost`, as OneDrive's are
// on SharePoint), so a token reaching an upload URL is the SDK's doing (the sandbox counts it).
const client = Client.init({
  baseUrl: `${origin}/`,
  defaultVersion: "v1.0",
  customHosts: new Set([new URL(origin).hostname]),
  authProvider: (done) => done(null, token),
});
const size = fs.statSync(file).size;
let slices = 0;
try {
  const task = await OneDriveLargeFileUploadTask.createTaskWithFileObject(
    client,
    new StreamUpload(fs.createReadStream(file), name, size),
    {
      path: folder,
      fileName: name,
      conflictBehavior: "fail",
      rangeSize: 10 * 320 * 1024,
      uploadEventHandlers: { progress: () => { slices += 1; } },
    },
  );
  const result = await task.upload();
  const item = result.responseBody;
  const link = await client.api(`/me/drive/items/${item.id}/createLink`).post({ type: "view", scope: "organization" });
  const again = await client.api(`/me/drive/items/${item.id}/createLink`).post({ type: "view", scope: "organization" });
  console.log(JSON.stringify({
    id: item.id,
    size: item.size,
    quickXorHash: item.file && item.file.hashes && item.file.hashes.quickXorHash,
    slices,
    webUrl: link.link.webUrl,
    again: again.link.webUrl,
  }));
} catch (e) {
  console.error("drive upload failed:", e && (e.message || e), e && e.statusCode, e && e.body);
  process.exit(1);
}
