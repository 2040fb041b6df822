// Upload FILE to an existing Outlook upload session with the official Microsoft Graph JS SDK
// (LargeFileUploadTask, 4 MiB ranges). Usage: node upload.mjs UPLOAD_URL FILE
// The client gets an auth provider that would add a bearer token; the SDK must not send it to
// the (non-Graph) upload URL. Prints {"location": ...} on success.
import fs from "node:fs";
import path from "node:path";
import graph from "@microsoft/microsoft-graph-client";

const { Client, LargeFileUploadTask, StreamUpload } = graph;
const [uploadUrl, file] = process.argv.slice(2);
if (!uploadUrl || !file) {
  console.error("usage: node upload.mjs UPLOAD_URL FILE");
  process.exit(2);
}
const size = fs.statSync(file).size;
const client = Client.init({ authProvider: (done) => done(null, "sdk-check-token-must-not-leak") });
const session = { url: uploadUrl, expiry: new Date(Date.now() + 3600e3), isCancelled: false };
const fileObject = new StreamUpload(fs.createReadStream(file), path.basename(file), size);
let slices = 0;
const task = new LargeFileUploadTask(client, fileObject, session, {
  rangeSize: 4 * 1024 * 1024,
  uploadEventHandlers: { progress: () => { slices += 1; } },
});
try {
  const result = await task.upload();
  console.log(JSON.stringify({ location: result.location, slices }));
} catch (e) {
  console.error("upload failed:", e && (e.message || e), e && e.statusCode, e && e.body);
  process.exit(1);
}
