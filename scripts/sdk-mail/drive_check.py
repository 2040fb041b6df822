"""Drive `outbox sandbox --tls`'s OneDrive with Microsoft's Python Graph SDK (msgraph-sdk), every
answer parsed by the SDK's models: GET /me/drive (Drive), a path that is not there (404 as the
SDK's ODataError), createUploadSession on `drives/{id}/items/root:/path:` with conflictBehavior
fail (UploadSession), the upload of a 7 MiB file by msgraph_core's LargeFileUploadTask in
320 KiB-multiple slices with DriveItem as its result model, the item read back by its path
(DriveItem, file.hashes.quickXorHash compared with scripts/quickxorhash.py, the second
implementation), a second createUploadSession on the same name (409 nameAlreadyExists),
createLink twice (Permission; the same link.webUrl both times) and the link's bytes.

msgraph_core's task appends "-" to every nextExpectedRanges entry and then parses the empty end
(GRAPH.md §5): on OneDrive's "N-" ranges it sends the first slice and then stops, logging the
error. That is reported as a NOTE, and the same session is finished with plain PUTs whose every
answer is parsed by the SDK's models (UploadSession on 202, DriveItem at the end), so the
sandbox's replies are still proved against the SDK's parsers. Usage: drive_check.py ORIGIN CA
TOKEN WORKDIR. Exit 0 = every check held."""

import asyncio
import hashlib
import os
import ssl
import sys
import urllib.request

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.drives.item.items.item.create_link.create_link_post_request_body import (
    CreateLinkPostRequestBody,
)
from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.models.drive_item import DriveItem
from msgraph.generated.models.drive_item_uploadable_properties import DriveItemUploadableProperties
from msgraph.generated.models.upload_session import UploadSession
from msgraph.graph_request_adapter import options as graph_options
from msgraph_core import GraphClientFactory
from msgraph_core.tasks.large_file_upload import LargeFileUploadTask

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from quickxorhash import QuickXorHash  # noqa: E402  (scripts/quickxorhash.py)

from check import StaticToken, admin, check  # noqa: E402  (the mail check's helpers)

UNIT = 320 * 1024
PATH = "Outbox/sdk check/seven.bin"


def parse(model, body: bytes):
    """The answer as the SDK's model, parsed by the SDK's own JSON parse node."""
    node = JsonParseNodeFactory().get_root_parse_node("application/json", body)
    return node.get_object_value(model)


async def main(origin, ca, token, work):
    host = origin.split("://", 1)[1].split(":", 1)[0]
    auth = AzureIdentityAuthenticationProvider(
        StaticToken(token), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=[host]
    )
    tls = ssl.create_default_context(cafile=ca)
    adapter = GraphRequestAdapter(
        auth,
        client=GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(verify=tls, timeout=120), options=graph_options
        ),
    )
    adapter.base_url = f"{origin}/v1.0"
    upload_adapter = GraphRequestAdapter(
        AnonymousAuthenticationProvider(),
        client=GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(verify=tls, timeout=120), options=graph_options
        ),
    )
    client = GraphServiceClient(request_adapter=adapter)

    drive = await client.me.drive.get()
    check(drive is not None and drive.id, f"no drive: {drive}")
    items = client.drives.by_drive_id(drive.id).items
    print(f"sdk-check-drive: drive {drive.id} ({drive.drive_type})")

    try:
        await items.by_drive_item_id(f"root:/{PATH}:").get()
        check(False, "a path that is not there was found")
    except APIError as e:
        check(e.response_status_code == 404, f"missing path: {e.response_status_code} {e}")

    data = os.urandom(7 * 1024 * 1024 + 12345)
    src = os.path.join(work, "seven.bin")
    with open(src, "wb") as f:
        f.write(data)
    sha = hashlib.sha256(data).hexdigest()
    qx = QuickXorHash()
    qx.update(data)
    want_qx = qx.b64()

    body = CreateUploadSessionPostRequestBody(
        item=DriveItemUploadableProperties(
            additional_data={"@microsoft.graph.conflictBehavior": "fail"}
        )
    )
    session = await items.by_drive_item_id(f"root:/{PATH}:").create_upload_session.post(body)
    check(session is not None and session.upload_url, f"no upload session: {session}")
    check(session.next_expected_ranges == ["0-"], f"ranges {session.next_expected_ranges}")
    check(session.expiration_date_time is not None, "no expirationDateTime")

    with open(src, "rb") as stream:
        task = LargeFileUploadTask(
            session, upload_adapter, stream, parsable_factory=DriveItem, max_chunk_size=8 * UNIT
        )
        try:
            result = await task.upload()
            task_error = None
        except Exception as e:  # noqa: BLE001 - reported below
            result, task_error = None, e
    item = getattr(result, "item_response", None)
    stored = [i for i in admin(origin, ca, "/drive") if i["path"] == PATH]
    if stored and isinstance(item, DriveItem):
        print("sdk-check-drive: LargeFileUploadTask finished the upload")
    else:
        print(
            "sdk-check-drive: NOTE: msgraph-core LargeFileUploadTask did not finish the session "
            f"({task_error!r}); its known range bug (it appends '-' to OneDrive's 'N-'). "
            "Finishing the same session with plain PUTs, each answer parsed by the SDK's models.",
            file=sys.stderr,
        )
        plain = httpx.AsyncClient(verify=tls, timeout=120)
        status = await plain.get(session.upload_url)
        check(status.status_code == 200, f"status GET: {status.status_code}")
        at = parse(UploadSession, status.content)
        start = int(at.next_expected_ranges[0].split("-")[0])
        item = None
        while start < len(data):
            piece = data[start : start + 8 * UNIT]
            end = start + len(piece) - 1
            r = await plain.put(
                session.upload_url,
                content=piece,
                headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"},
            )
            if end + 1 < len(data):
                check(r.status_code == 202, f"PUT {start}-{end}: {r.status_code} {r.text}")
                nxt = parse(UploadSession, r.content)
                check(nxt.next_expected_ranges == [f"{end + 1}-"], f"ranges {nxt.next_expected_ranges}")
            else:
                check(r.status_code == 201, f"last PUT: {r.status_code} {r.text}")
                item = parse(DriveItem, r.content)
            start = end + 1
        stored = [i for i in admin(origin, ca, "/drive") if i["path"] == PATH]
    check(isinstance(item, DriveItem) and item.id, f"no driveItem at the end: {item}")
    check(item.size == len(data), f"driveItem size {item.size}")
    check(item.file.hashes.quick_xor_hash == want_qx, f"quickXorHash {item.file.hashes.quick_xor_hash} != {want_qx}")
    check(len(stored) == 1 and stored[0]["sha256"] == sha, f"stored: {stored}")
    print(f"sdk-check-drive: seven.bin ({len(data)} bytes) on the drive, sha256 and quickXorHash ok")

    found = await items.by_drive_item_id(f"root:/{PATH}:").get()
    check(found.id == item.id, "found by path: another id")
    check(found.file.hashes.quick_xor_hash == want_qx, "found by path: another quickXorHash")
    check(found.parent_reference.path == "/drive/root:/Outbox/sdk check", f"parent {found.parent_reference.path}")

    try:
        await items.by_drive_item_id(f"root:/{PATH}:").create_upload_session.post(body)
        check(False, "a second session on a taken name with fail")
    except APIError as e:
        check(e.response_status_code == 409, f"taken name: {e.response_status_code} {e}")

    link_body = CreateLinkPostRequestBody(type="view", scope="organization")
    first = await items.by_drive_item_id(item.id).create_link.post(link_body)
    again = await items.by_drive_item_id(item.id).create_link.post(link_body)
    check(first.link and first.link.web_url, f"no link: {first}")
    check(again.link.web_url == first.link.web_url, "createLink again gave another link")
    check(first.link.scope == "organization" and first.link.type == "view", "link scope/type")
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(first.link.web_url, context=ctx) as r:
        check(r.read() == data, "the link's bytes differ")
    links = admin(origin, ca, "/links")
    check(len(links) == 1, f"links: {links}")
    print("sdk-check-drive: createLink twice, one link, its webUrl answers the bytes")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(*sys.argv[1:]))
    print("sdk-check-drive: OK")
