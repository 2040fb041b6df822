//! Graph HTTP: attachments, upload sessions, ranges, errors, retry, pacing.
