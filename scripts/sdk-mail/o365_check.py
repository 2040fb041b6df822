"""A second, independent client against `outbox sandbox --tls`: the O365 Python library
(PyPI `O365`, https://github.com/O365/python-o365), which talks to Graph through `requests`.

It sends two messages with attachments and reads each back from Sent Items with exact bytes:
  A. a new draft saved with a small attachment inline in its create body, then sent;
  B. a draft saved empty, then a small file (attachment POST) and a 5 MiB one (O365's own
     createUploadSession and PUTs, without the bearer token) added, then sent.
Each sent copy is found by `$filter=internetMessageId eq '…'` in Sent Items, its attachments
fetched by O365's `download_attachments()` (the list, read for `contentBytes`) and written with
`attachment.save()`, and the files compared byte for byte with what was sent; the copy's
attachment ids must be new (not the draft's).

How O365 is pointed at the sandbox, with its documented extension points only:
  - the Graph root: a `Protocol` subclass (O365's docs: "you can implement your own protocols
    by inheriting from Protocol") of `MSGraphProtocol` whose `_protocol_url` is the sandbox's
    origin; `/v1.0/` and the `me` resource come from the library as for Graph;
  - the token: a `BaseTokenBackend` subclass (O365's docs: "you can implement your own token
    backend") that hands out the sandbox's fixed `--token` as the stored access token; O365's
    sign-in (msal against login.microsoftonline.com) is never called, so nothing leaves loopback;
  - TLS: `requests` trusts the sandbox's CA through `REQUESTS_CA_BUNDLE`, its documented
    variable (O365 leaves `verify_ssl` at True).
What O365 cannot do against Graph and is not asked to: send a new message with attachments in
one call (`Message.send()` of an unsaved message uses `/sendMail`, which the sandbox does not
serve); update a saved draft's fields (a PATCH the sandbox does not serve). A saved draft that is
given more attachments and saved again uploads only those (the ones given inline at create are
not marked as uploaded by O365 2.1, so they would be posted twice: B adds its files after an
empty save for that reason).

Usage: o365_check.py ORIGIN CA_FILE TOKEN WORKDIR. Exit 0 = every check held."""

import hashlib
import json
import os
import ssl
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from O365 import Account
from O365.connection import MSGraphProtocol
from O365.utils.token import BaseTokenBackend


def fail(msg):
    print(f"sdk-check-mail: O365: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def admin(origin, ca, path):
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(f"{origin}/_admin{path}", context=ctx) as r:
        return json.load(r)


class FixedTokenBackend(BaseTokenBackend):
    """The sandbox's `--token` as the one stored access token (no refresh token, no account)."""

    def __init__(self, token):
        super().__init__()
        self._token = token

    def load_token(self):
        return True

    def save_token(self, force=False):
        return True

    def get_access_token(self, *, username=None):
        return {"secret": self._token, "expires_on": str(int(time.time()) + 3600)}


def protocol_for(origin):
    class SandboxProtocol(MSGraphProtocol):
        _protocol_url = f"{origin}/"
        _oauth_scope_prefix = f"{origin}/"

    return SandboxProtocol(api_version="v1.0", timezone="UTC")


def sent_copy(mailbox, imid):
    """The message with this internetMessageId in Sent Items (the move is asynchronous)."""
    folder = mailbox.sent_folder()
    for _ in range(60):
        found = list(folder.get_messages(limit=5, query=f"internetMessageId eq '{imid}'"))
        if found:
            check(len(found) == 1, f"{len(found)} sent copies of {imid}")
            return found[0]
        time.sleep(0.2)
    fail(f"no sent copy of {imid} in Sent Items")


def imid_of(mailbox, draft_id, label):
    """The draft's internetMessageId, as O365 reads the draft back by id."""
    draft = mailbox.get_message(object_id=draft_id)
    check(draft is not None and draft.internet_message_id, f"{label}: draft not readable")
    check(draft.is_draft, f"{label}: the draft reads back as not a draft")
    return draft.internet_message_id


def check_copy(mailbox, imid, draft_id, files, draft_att_ids, out_dir, label):
    copy = sent_copy(mailbox, imid)
    check(copy.object_id != draft_id and not copy.is_draft, f"{label}: the copy is the draft")
    check(copy.has_attachments, f"{label}: the sent copy has no attachments")
    check(copy.attachments.download_attachments(), f"{label}: download_attachments failed")
    got = {a.name: a for a in copy.attachments}
    check(sorted(got) == sorted(files), f"{label}: attachments {sorted(got)}, sent {sorted(files)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, want in files.items():
        a = got[name]
        check(a.attachment_id not in draft_att_ids, f"{label}: {name} kept the draft's attachment id")
        check(a.save(location=str(out_dir)), f"{label}: {name} could not be saved")
        saved = (out_dir / name).read_bytes()
        check(
            saved == want,
            f"{label}: {name}: {len(saved)} bytes read back (sha256 {hashlib.sha256(saved).hexdigest()[:12]}), "
            f"{len(want)} sent (sha256 {hashlib.sha256(want).hexdigest()[:12]})",
        )
        print(f"sdk-check-mail: O365: {label}: {name} ({len(want)} bytes) read back from Sent Items, bytes equal")
    return copy


def main(origin, ca, token, work):
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    work = Path(work) / "o365"
    work.mkdir(parents=True, exist_ok=True)
    account = Account(
        "sandbox-o365-check",
        auth_flow_type="public",
        protocol=protocol_for(origin),
        token_backend=FixedTokenBackend(token),
        request_retries=0,
        requests_delay=0,
        timeout=120,
    )
    mailbox = account.mailbox()

    # A: a draft created with its attachment inline, then sent.
    small_a = os.urandom(3000) + b"\n--O365 inline--\n"
    path_a = work / "inline.bin"
    path_a.write_bytes(small_a)
    m = mailbox.new_message()
    m.to.add("ap@contoso.com")
    m.subject = f"O365 check A {uuid.uuid4()}"
    m.body = "<p>Sent by the O365 check (inline attachment).</p>"
    m.attachments.add([path_a])
    check(m.save_draft(), "A: save_draft failed")
    check(m.object_id, "A: no draft id")
    draft_a = m.object_id
    draft_ids_a = {a["id"] for a in admin(origin, ca, f"/items/{draft_a}/attachments")}
    imid_a = imid_of(mailbox, draft_a, "A")
    check(m.send(), "A: send failed")
    print(f"sdk-check-mail: O365: A: draft {draft_a[:16]}... created with its attachment inline, sent")

    # B: an empty draft, then a small file (POST) and a 5 MiB one (upload session).
    small_b = b"small file from O365\n" * 40
    big_b = os.urandom(5 * 1024 * 1024 + 17)
    (work / "small.txt").write_bytes(small_b)
    (work / "big.bin").write_bytes(big_b)
    m = mailbox.new_message()
    m.to.add("ap@contoso.com")
    m.subject = f"O365 check B {uuid.uuid4()}"
    m.body = "<p>Sent by the O365 check (POST and upload session).</p>"
    check(m.save_draft(), "B: save_draft (empty) failed")
    draft_b = m.object_id
    m.attachments.add([work / "small.txt", work / "big.bin"])
    check(m.save_draft(), "B: save_draft (attachments) failed")
    stored = {a["name"]: a for a in admin(origin, ca, f"/items/{draft_b}/attachments")}
    check(
        sorted(stored) == ["big.bin", "small.txt"]
        and stored["big.bin"]["sha256"] == hashlib.sha256(big_b).hexdigest(),
        f"B: the draft holds {sorted(stored)}",
    )
    draft_ids_b = {a["id"] for a in stored.values()}
    imid_b = imid_of(mailbox, draft_b, "B")
    check(m.send(), "B: send failed")
    print(f"sdk-check-mail: O365: B: draft {draft_b[:16]}... given small.txt (POST) and big.bin (upload session), sent")

    check_copy(mailbox, imid_a, draft_a, {"inline.bin": small_a}, draft_ids_a, work / "back-a", "A")
    check_copy(
        mailbox, imid_b, draft_b, {"small.txt": small_b, "big.bin": big_b}, draft_ids_b, work / "back-b", "B"
    )
    stats = admin(origin, ca, "/stats")
    check(stats["upload_url_requests_with_authorization"] == 0, "O365 sent the token to an upload URL")
    print("sdk-check-mail: O365: both sent copies read back with exact bytes and new attachment ids")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
