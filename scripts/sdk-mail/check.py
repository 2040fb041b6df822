"""Drive `outbox sandbox --tls` with Microsoft's Python Graph SDK (msgraph-sdk): create a draft
carrying an extended property, attach a small file (attachment POST) and a large one (the SDK's
createUploadSession + msgraph_core LargeFileUploadTask), find the draft by the documented
$filter, send it, and read the copy back from Sent Items by the marker, then its attachments
(list and by id) with each FileAttachment's content_bytes compared with the file sent. Every
answer is parsed by the SDK's models. Usage: check.py ORIGIN CA_FILE TOKEN WORKDIR. Exit 0 = every check held."""

import asyncio
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.request
import uuid

import httpx
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as graph_options
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.messages.item.message_item_request_builder import (
    MessageItemRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder as FolderMessagesRequestBuilder,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph_core import GraphClientFactory
from msgraph_core.tasks.large_file_upload import LargeFileUploadTask

PROP = "String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name outboxMessageId"


class StaticToken:
    """An async credential that hands out the sandbox's fixed token."""

    def __init__(self, token):
        self.token = token

    async def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        pass


def fail(msg):
    print(f"sdk-check-mail: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def admin(origin, ca, path):
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(f"{origin}/_admin{path}", context=ctx) as r:
        return json.load(r)


async def main(origin, ca, token, work):
    host = origin.split("://", 1)[1].split(":", 1)[0]
    auth = AzureIdentityAuthenticationProvider(
        StaticToken(token), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=[host]
    )
    tls = ssl.create_default_context(cafile=ca)
    # The SDK's own middleware, with its options (`/users/me-token-to-replace` -> `/me`).
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=tls, timeout=120), options=graph_options
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{origin}/v1.0"
    # Upload URLs get no token (as the .NET and Java SDKs do with an anonymous adapter): the
    # sandbox's upload URLs are on the Graph host, where the bearer provider would add one.
    upload_adapter = GraphRequestAdapter(
        AnonymousAuthenticationProvider(),
        client=GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(verify=tls, timeout=120), options=graph_options
        ),
    )
    client = GraphServiceClient(request_adapter=adapter)

    marker = f"sdk-{uuid.uuid4()}"
    msg = Message(
        subject="SDK check",
        body=ItemBody(content_type=BodyType.Text, content="Sent by the Python SDK check."),
        to_recipients=[Recipient(email_address=EmailAddress(address="ap@contoso.com"))],
        single_value_extended_properties=[SingleValueLegacyExtendedProperty(id=PROP, value=marker)],
    )
    draft = await client.me.mail_folders.by_mail_folder_id("drafts").messages.post(msg)
    check(draft is not None and draft.id and draft.is_draft is True, f"draft not created: {draft}")
    check(draft.internet_message_id, "the draft has no internetMessageId")
    print(f"sdk-check-mail: draft {draft.id[:16]}... created, isDraft={draft.is_draft}")
    item = client.me.messages.by_message_id(draft.id)

    # A small file by the attachment POST.
    small = b"small attachment from the Python SDK\n"
    att = await item.attachments.post(
        FileAttachment(odata_type="#microsoft.graph.fileAttachment", name="small.txt", content_bytes=small)
    )
    check(att is not None and att.id and att.name == "small.txt", f"small attachment: {att}")

    # A large file by createUploadSession + LargeFileUploadTask.
    big_path = os.path.join(work, "big.bin")
    with open(big_path, "wb") as f:
        f.write(os.urandom(12 * 1024 * 1024 + 321))
    with open(big_path, "rb") as f:
        big_sha = hashlib.sha256(f.read()).hexdigest()
    size = os.path.getsize(big_path)
    session = await item.attachments.create_upload_session.post(
        CreateUploadSessionPostRequestBody(
            attachment_item=AttachmentItem(attachment_type=AttachmentType.File, name="big.bin", size=size)
        )
    )
    check(session is not None and session.upload_url, f"no upload session: {session}")
    check(session.next_expected_ranges == ["0-"], f"nextExpectedRanges {session.next_expected_ranges}")
    with open(big_path, "rb") as stream:
        task = LargeFileUploadTask(session, upload_adapter, stream, max_chunk_size=4 * 1024 * 1024)
        try:
            result = await task.upload()
            task_error = None
        except Exception as e:  # noqa: BLE001 - reported below, then finished by hand
            result, task_error = None, e
    stored = [a for a in admin(origin, ca, f"/items/{draft.id}/attachments") if a["name"] == "big.bin"]
    sdk_ok = len(stored) == 1 and stored[0]["sha256"] == big_sha
    if sdk_ok:
        print(f"sdk-check-mail: big.bin ({size} bytes) uploaded by LargeFileUploadTask, sha256 ok")
    else:
        # msgraph_core's task swallows per-chunk errors (GRAPH.md §5); say so and finish the
        # upload ourselves on the same session, so the rest of the check still runs.
        # msgraph-core's task appends "-" to Outlook's bare "N" range and then parses an empty
        # end (GRAPH.md section 5): it cannot finish an Outlook session, real or sandboxed.
        print(
            f"sdk-check-mail: NOTE: msgraph-core LargeFileUploadTask did not finish the session "
            f"({task_error!r}; {len(stored)} attachment stored, location="
            f"{getattr(result, 'location', None)!r}); the SDK's known bug with Outlook's \"N\" "
            "ranges. Finishing the same session with plain PUTs.",
            file=sys.stderr,
        )
        plain = httpx.AsyncClient(verify=tls, timeout=120)
        status = await plain.get(session.upload_url)
        start = int(status.json()["nextExpectedRanges"][0].split("-")[0])
        with open(big_path, "rb") as f:
            f.seek(start)
            while start < size:
                chunk = f.read(4 * 1024 * 1024)
                end = start + len(chunk) - 1
                r = await plain.put(
                    session.upload_url,
                    content=chunk,
                    headers={"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(len(chunk))},
                )
                check(r.status_code in (200, 201), f"PUT {start}-{end}: {r.status_code} {r.text}")
                start = end + 1
        stored = [a for a in admin(origin, ca, f"/items/{draft.id}/attachments") if a["name"] == "big.bin"]
        check(len(stored) == 1 and stored[0]["sha256"] == big_sha, "big.bin not stored whole")

    # The attachments as the SDK reads them.
    atts = await item.attachments.get()
    names = sorted(a.name for a in atts.value)
    check(names == ["big.bin", "small.txt"], f"attachments listed: {names}")
    draft_att_ids = {a.id for a in atts.value}

    # Find the draft by the documented $filter, with the property expanded.
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq '{marker}')"
    exp = f"singleValueExtendedProperties($filter=id eq '{PROP}')"
    q = FolderMessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        filter=flt, expand=[exp], select=["id", "isDraft", "internetMessageId", "sentDateTime"]
    )
    found = await client.me.mail_folders.by_mail_folder_id("drafts").messages.get(
        RequestConfiguration(query_parameters=q)
    )
    check(len(found.value) == 1 and found.value[0].id == draft.id, f"draft not found by marker: {found.value}")
    props = found.value[0].single_value_extended_properties or []
    check([(p.id, p.value) for p in props] == [(PROP, marker)], f"expanded property: {props}")
    print("sdk-check-mail: draft found by its marker ($filter on singleValueExtendedProperties)")

    # Send; the copy appears in Sent Items under a new id.
    await item.send.post()
    sent = None
    for _ in range(50):
        q = FolderMessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(filter=flt, expand=[exp])
        res = await client.me.mail_folders.by_mail_folder_id("sentitems").messages.get(
            RequestConfiguration(query_parameters=q)
        )
        if res.value:
            sent = res.value[0]
            break
        await asyncio.sleep(0.2)
    check(sent is not None, "no sent copy in Sent Items")
    check(sent.id != draft.id and sent.is_draft is False, f"sent copy: id={sent.id} isDraft={sent.is_draft}")
    check(sent.internet_message_id == draft.internet_message_id, "internetMessageId changed")
    check(sent.sent_date_time is not None, "no sentDateTime")
    check([(p.id, p.value) for p in sent.single_value_extended_properties or []] == [(PROP, marker)], "marker lost")
    try:
        await client.me.messages.by_message_id(draft.id).get()
        fail("the draft id still resolves after the move")
    except Exception as e:  # the SDK raises ODataError
        code = getattr(getattr(e, "error", None), "code", None)
        check(code == "ErrorItemNotFound", f"draft id after the move: {e!r}")
    listed = admin(origin, ca, "/sent")
    check(len(listed) == 1, f"sent messages: {len(listed)}")
    got = {a["name"]: a["sha256"] for a in listed[0]["attachments"]}
    check(got.get("big.bin") == big_sha and got.get("small.txt") == hashlib.sha256(small).hexdigest(), f"sent attachments {got}")
    check(admin(origin, ca, "/stats")["duplicate_sends"] == 0, "duplicate sends")

    # Read the sent copy's attachments back through the SDK: the list and one by id, each
    # parsed as a FileAttachment whose content_bytes (the base64 contentBytes, decoded by the
    # SDK) must be exactly the bytes sent; the copy's attachment ids are its own.
    with open(big_path, "rb") as f:
        big = f.read()
    want = {"small.txt": small, "big.bin": big}
    copy = client.me.messages.by_message_id(sent.id)
    back = await copy.attachments.get()
    by_name = {a.name: a for a in back.value}
    check(sorted(by_name) == ["big.bin", "small.txt"], f"sent copy's attachments: {sorted(by_name)}")
    for name, a in by_name.items():
        check(isinstance(a, FileAttachment), f"{name} is a {type(a).__name__}, not a FileAttachment")
        check(a.content_bytes == want[name], f"{name}: content_bytes of the list differ from the file sent")
        check(a.id not in draft_att_ids, f"{name}: the sent copy kept the draft's attachment id")
        one = await copy.attachments.by_attachment_id(a.id).get()
        check(isinstance(one, FileAttachment), f"{name} by id is a {type(one).__name__}")
        check(one.content_bytes == want[name], f"{name}: content_bytes by id differ from the file sent")
    print(
        "sdk-check-mail: sent copy's attachments read back through the SDK (list and by id): "
        f"FileAttachment.content_bytes equal to the files sent ({len(small)} and {len(big)} bytes), new ids"
    )
    print(f"sdk-check-mail: sent; copy {sent.id[:16]}... in Sent Items, isDraft=false, internetMessageId kept, attachments' sha256 ok")
    print("sdk-check-mail: LargeFileUploadTask " + ("ok" if sdk_ok else "did not finish (SDK bug, see NOTE); session finished by plain PUTs"))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
