//! `outbox pause` / `outbox resume`: a mapping (or every one) takes no new file from its folder
//! while the agent runs on; what is under way finishes. Files seen meanwhile stay in their
//! folder, listed by `status` as waiting for the resume, and are taken (a scan of the folder)
//! when it comes: `outbox resume`, or the end of `--for`. A pause lasts as long as the agent: a
//! restart takes every file again.

use super::control::{AgentView, Held, Response, Wait, WaitReason};
use super::Agent;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What is paused, and the files left in their folders meanwhile.
#[derive(Default)]
pub(super) struct Pauses {
    /// Every mapping (`outbox pause` with no mapping).
    all: Option<Hold>,
    /// By mapping name.
    mappings: BTreeMap<String, Hold>,
    /// Files seen while their mapping was paused, by mapping name.
    files: BTreeMap<String, BTreeSet<PathBuf>>,
}

#[derive(Clone, Copy)]
struct Hold {
    /// `--for`: when it ends by itself (for the timer, and in Unix ms for `status`).
    until: Option<(Instant, u64)>,
}

impl Pauses {
    /// The mapping takes no new file now.
    pub(super) fn holds(&self, mapping: &str) -> bool {
        self.all.is_some() || self.mappings.contains_key(mapping)
    }

    /// A file of a paused mapping was seen: it stays in its folder for now.
    pub(super) fn hold(&mut self, mapping: &str, path: &Path) {
        self.files
            .entry(mapping.to_owned())
            .or_default()
            .insert(path.to_path_buf());
    }

    /// A file left in its folder is gone from it.
    pub(super) fn gone(&mut self, mapping: &str, path: &Path) {
        if let Some(files) = self.files.get_mut(mapping) {
            files.remove(path);
        }
    }

    /// The next moment a `--for` pause ends by itself.
    pub(super) fn next_end(&self) -> Option<Instant> {
        self.all
            .iter()
            .chain(self.mappings.values())
            .filter_map(|h| h.until.map(|(at, _)| at))
            .min()
    }

    /// The files left in their folders: (mapping, path, until when in Unix ms).
    pub(super) fn held_files(&self) -> impl Iterator<Item = (&str, &Path, Option<u64>)> {
        self.files.iter().flat_map(move |(mapping, files)| {
            let until = self.until_ms(mapping);
            files
                .iter()
                .map(move |p| (mapping.as_str(), p.as_path(), until))
        })
    }

    /// When `mapping` resumes by itself: the later of its own pause and a pause of all, when
    /// both end by themselves.
    fn until_ms(&self, mapping: &str) -> Option<u64> {
        let ends = [self.all.as_ref(), self.mappings.get(mapping)];
        let holds: Vec<&Hold> = ends.into_iter().flatten().collect();
        if holds.iter().any(|h| h.until.is_none()) {
            return None;
        }
        holds.iter().filter_map(|h| h.until.map(|(_, ms)| ms)).max()
    }

    pub(super) fn view(&self) -> Vec<Held> {
        let count = |m: &str| self.files.get(m).map_or(0, BTreeSet::len);
        let mut out = Vec::new();
        if let Some(h) = &self.all {
            out.push(Held {
                mapping: None,
                until_ms: h.until.map(|(_, ms)| ms),
                files: self.files.values().map(BTreeSet::len).sum(),
            });
        }
        for (name, h) in &self.mappings {
            out.push(Held {
                mapping: Some(name.clone()),
                until_ms: h.until.map(|(_, ms)| ms),
                files: count(name),
            });
        }
        out
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Agent {
    /// `outbox pause [MAPPING] [--for DURATION]`.
    pub(super) fn pause(&mut self, mapping: Option<String>, for_ms: Option<u64>) -> Response {
        if let Some(refused) = self.unknown_mapping(mapping.as_deref()) {
            return refused;
        }
        let until = for_ms.map(|ms| {
            (
                Instant::now() + Duration::from_millis(ms),
                now_ms().saturating_add(ms),
            )
        });
        let hold = Hold { until };
        let what = match &mapping {
            Some(name) => format!("mapping {}", crate::outside::printable(name)),
            None => "every mapping".to_owned(),
        };
        match mapping {
            Some(name) => {
                self.pauses.mappings.insert(name, hold);
            }
            None => self.pauses.all = Some(hold),
        }
        let until = match for_ms {
            Some(ms) => format!("for {} s", ms.div_ceil(1000)),
            None => "until `outbox resume`".to_owned(),
        };
        tracing::info!("paused by `outbox pause` ({what}, {until}): no new file is taken from its folders; uploads under way finish");
        self.held_answer(None)
    }

    /// `outbox resume [MAPPING]`: resumed mappings take the files dropped meanwhile at once.
    pub(super) fn resume(&mut self, mapping: Option<String>) -> Response {
        if let Some(refused) = self.unknown_mapping(mapping.as_deref()) {
            return refused;
        }
        let names: Vec<String> = self
            .settings
            .mappings
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let resumed = self.release(|p| match mapping {
            None => {
                p.all = None;
                p.mappings.clear();
            }
            Some(name) => {
                // One mapping out of a pause of all: the others stay paused as they were.
                if let Some(all) = p.all.take() {
                    for other in names {
                        p.mappings.entry(other).or_insert(all);
                    }
                }
                p.mappings.remove(&name);
            }
        });
        self.held_answer(Some(resumed))
    }

    /// `--for` pauses that ended: their mappings take new files again.
    pub(super) fn end_pauses(&mut self) {
        let now = Instant::now();
        let over = |h: &Hold| h.until.is_some_and(|(at, _)| at <= now);
        if !self
            .pauses
            .all
            .iter()
            .chain(self.pauses.mappings.values())
            .any(over)
        {
            return;
        }
        self.release(|p| {
            if p.all.as_ref().is_some_and(over) {
                p.all = None;
            }
            p.mappings.retain(|_, h| !over(h));
        });
    }

    /// Change the pauses; every mapping no longer paused takes its folder's files now (a scan:
    /// those dropped meanwhile, and any whose events were not taken). The mappings released.
    fn release(&mut self, change: impl FnOnce(&mut Pauses)) -> Vec<String> {
        let names: Vec<String> = self
            .settings
            .mappings
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let before: Vec<bool> = names.iter().map(|n| self.pauses.holds(n)).collect();
        change(&mut self.pauses);
        let mut released = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if before[i] && !self.pauses.holds(name) {
                released.push(name.clone());
                let waiting = self.pauses.files.remove(name).map_or(0, |f| f.len());
                tracing::info!(mapping = %crate::outside::printable(name), waiting, "resumed: new files are taken again, and the {waiting} dropped while paused");
                self.rescan(Some(i));
            }
        }
        released
    }

    fn unknown_mapping(&self, mapping: Option<&str>) -> Option<Response> {
        let name = mapping?;
        if self.settings.mappings.iter().any(|m| m.name == name) {
            return None;
        }
        let names: Vec<String> = self
            .settings
            .mappings
            .iter()
            .map(|m| m.name.clone())
            .collect();
        Some(Response::error(
            2,
            format!(
                "no mapping named `{}` in the config the agent runs (its mappings: {})",
                crate::outside::printable(name),
                names.join(", ")
            ),
        ))
    }

    /// What is paused now, as `pause` and `resume` answer (`resume`: what it released).
    fn held_answer(&self, resumed: Option<Vec<String>>) -> Response {
        let mut r = Response::entries(Vec::new());
        r.agent = Some(AgentView {
            paused: None,
            waits: Vec::new(),
            held: self.pauses.view(),
            folders: Vec::new(),
            config: None,
            config_read_ms: None,
            resumed,
        });
        r
    }

    /// `status`: each file left in its folder waits for the resume.
    pub(super) fn held_waits(&self) -> Vec<(String, Wait)> {
        self.pauses
            .held_files()
            .map(|(_, path, until)| {
                (
                    super::settling_id(path),
                    Wait {
                        reason: WaitReason::Paused,
                        until_ms: until,
                        error: None,
                        attempts: 0,
                    },
                )
            })
            .collect()
    }
}
