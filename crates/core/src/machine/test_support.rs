//! Builders for the core's unit tests: the set-up they repeat (a request answered, and the
//! outcomes and faults it is answered with; a start-up from records alone), each said once here.

use super::*;

impl Machine {
    /// Request `id` answered at `t` with `outcome`; the actions that follow.
    pub(crate) fn answer(&mut self, t: u64, id: &str, outcome: Outcome) -> Vec<Action> {
        self.handle(
            Time(t),
            Input::Outcome {
                id: id.to_owned(),
                outcome,
            },
        )
    }

    /// `path` of `mapping` reported gone at `t`, and its look again (the `Stat` a report of a
    /// version with work left asks for) answered "not there": the actions of both.
    pub(crate) fn gone_at(&mut self, t: u64, mapping: &str, path: &str) -> Vec<Action> {
        let mut out = self.handle(
            Time(t),
            Input::Gone {
                mapping: mapping.into(),
                path: path.into(),
            },
        );
        let asked = out
            .iter()
            .any(|a| matches!(a, Action::Stat { path: p } if p.as_path() == Path::new(path)));
        if asked {
            out.extend(self.handle(
                Time(t),
                Input::Stat {
                    path: path.into(),
                    stat: None,
                },
            ));
        }
        out
    }

    /// Message `mid`'s draft (looked for again, or in doubt) found at `t` in neither Sent
    /// Items nor Drafts, then again once Exchange's move has surely had time (`move_grace_ms`):
    /// gone (deleted by hand). The actions of the last answer, and the time it came.
    pub(crate) fn draft_gone(&mut self, t: u64, mid: &str) -> (Vec<Action>, u64) {
        self.answer(t, mid, not_found_in(MailFolder::SentItems));
        let out = self.answer(t + 100, mid, not_found_in(MailFolder::Drafts));
        assert!(
            !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
            "no new draft before the move's grace: {out:?}"
        );
        let t = t + 100 + messages::move_grace_ms(self.policy.look_after_ms);
        self.handle(Time(t), Input::Tick);
        self.answer(t + 100, mid, not_found_in(MailFolder::SentItems));
        (
            self.answer(t + 200, mid, not_found_in(MailFolder::Drafts)),
            t + 200,
        )
    }

    /// Start-up at `t` with the ledger's `records`, no saved upload URL and no message.
    pub(crate) fn start_up(&mut self, t: u64, records: Vec<Record>) -> Vec<Action> {
        self.handle(
            Time(t),
            Input::Start {
                records,
                with_url: vec![],
                messages: vec![],
            },
        )
    }
}

// ---- faults -------------------------------------------------------------------------------

pub(crate) fn permanent(code: impl Into<String>, message: impl Into<String>) -> Fault {
    Fault::Permanent(Failure::new(code, message))
}

pub(crate) fn ambiguous(code: impl Into<String>, message: impl Into<String>) -> Fault {
    Fault::Ambiguous(Failure::new(code, message))
}

pub(crate) fn unreachable(code: impl Into<String>, message: impl Into<String>) -> Fault {
    Fault::Unreachable(Failure::new(code, message))
}

pub(crate) fn sign_in(code: impl Into<String>, message: impl Into<String>) -> Fault {
    Fault::SignIn(Failure::new(code, message))
}

/// 429 or 503 with `Retry-After` (in ms), or without.
pub(crate) fn throttled(retry_after_ms: Option<u64>) -> Fault {
    Fault::Throttled { retry_after_ms }
}

// ---- a file's steps -----------------------------------------------------------------------

/// The POST made attachment `att`.
pub(crate) fn post_created(att: &str) -> Outcome {
    Outcome::Post(PostOutcome::Created {
        attachment_id: att.to_owned(),
    })
}

pub(crate) fn post_failed(f: Fault) -> Outcome {
    Outcome::Post(PostOutcome::Failed(f))
}

/// An upload session made; its server wants bytes from `next`.
pub(crate) fn session_created(next: u64) -> Outcome {
    Outcome::CreateSession(SessionOutcome::Created { next })
}

/// A look found the bytes as attachment `att`.
pub(crate) fn look_found(att: &str) -> Outcome {
    Outcome::Look(LookOutcome::Found {
        attachment_id: att.to_owned(),
    })
}

pub(crate) fn look_not_found() -> Outcome {
    Outcome::Look(LookOutcome::NotFound)
}

pub(crate) fn look_failed(f: Fault) -> Outcome {
    Outcome::Look(LookOutcome::Failed(f))
}

pub(crate) fn attachment_deleted() -> Outcome {
    Outcome::DeleteAttachment(DeleteOutcome::Deleted)
}

pub(crate) fn session_deleted() -> Outcome {
    Outcome::DeleteSession(DeleteOutcome::Deleted)
}

// ---- a message's steps --------------------------------------------------------------------

/// The draft made as `draft`, with its `internetMessageId` if Graph gave one.
pub(crate) fn draft_created(draft: &str, internet_message_id: Option<&str>) -> Outcome {
    Outcome::CreateDraft(DraftOutcome::Created {
        draft_id: draft.to_owned(),
        internet_message_id: internet_message_id.map(str::to_owned),
    })
}

pub(crate) fn draft_failed(f: Fault) -> Outcome {
    Outcome::CreateDraft(DraftOutcome::Failed(f))
}

/// A search by marker of `folder` found nothing.
pub(crate) fn not_found_in(folder: MailFolder) -> Outcome {
    Outcome::Find(folder, FindOutcome::NotFound)
}

/// The draft's listing: these attachment ids.
pub(crate) fn listed(attachments: &[&str]) -> Outcome {
    Outcome::ListDraft(ListOutcome::Listed(
        attachments.iter().map(|a| (*a).to_owned()).collect(),
    ))
}

pub(crate) fn send_ok() -> Outcome {
    Outcome::Send(SendOutcome::Sent)
}

pub(crate) fn send_failed(f: Fault) -> Outcome {
    Outcome::Send(SendOutcome::Failed(f))
}

// ---- an upload session's chunks -----------------------------------------------------------

/// A chunk taken; the server wants bytes from `next`.
pub(crate) fn chunk_accepted(next: u64) -> Outcome {
    Outcome::Chunk(ChunkOutcome::Accepted { next: Some(next) })
}

pub(crate) fn chunk_failed(f: Fault) -> Outcome {
    Outcome::Chunk(ChunkOutcome::Failed(f))
}

/// 401/403/404 on the upload URL.
pub(crate) fn chunk_session_gone() -> Outcome {
    Outcome::Chunk(ChunkOutcome::SessionGone)
}
