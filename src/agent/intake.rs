//! What the watcher and scans see, as the core's inputs: a file observed (or closed after
//! writing, or gone), a mapped folder unavailable or back.

use super::files::file_stat;
use super::Agent;
use crate::config::Settings;
use crate::core::model::{FileStat, Input};
use crate::watch::{self, WatchEvent};
use std::path::Path;

/// `Action::Stat`: the path's identity now, if it is still a file the mapping accepts.
pub fn stat_of(settings: &Settings, path: &Path) -> Option<FileStat> {
    let m = settings
        .mappings
        .iter()
        .find(|m| path.starts_with(&m.folder))?;
    let meta = watch::file_meta(m, &m.folder, path)?;
    if !meta.is_file() {
        return None;
    }
    file_stat(path, &meta)
}

impl Agent {
    pub(super) fn on_watch(&mut self, ev: WatchEvent) {
        if self.losing_events {
            return;
        }
        let Some(ev) = self.placed(ev) else {
            return;
        };
        let name = |i: usize, s: &Settings| s.mappings.get(i).map(|m| m.name.clone());
        match ev {
            WatchEvent::Rescan { mapping } => {
                tracing::warn!("events may have been lost: rescanning");
                self.rescan(mapping);
            }
            WatchEvent::Touched { mapping, path }
                if self
                    .settings
                    .mappings
                    .get(mapping)
                    .is_some_and(|m| m.folder == path) =>
            {
                self.folder_back(mapping);
            }
            WatchEvent::Removed { mapping, path }
                if self
                    .settings
                    .mappings
                    .get(mapping)
                    .is_some_and(|m| m.folder == path) =>
            {
                if !path.exists() {
                    self.folder_gone(mapping);
                    if let Some(w) = self.watcher.as_mut() {
                        w.await_return(&path);
                    }
                }
            }
            WatchEvent::Touched { mapping, path } | WatchEvent::Closed { mapping, path }
                if self
                    .settings
                    .mappings
                    .get(mapping)
                    .is_some_and(|m| !watch::accepts(m, &path)) =>
            {
                // A directory that appeared in a recursive mapping: scan it.
                if self.settings.mappings[mapping].recursive && path.is_dir() {
                    self.rescan(Some(mapping));
                }
            }
            WatchEvent::Touched { mapping, path } => self.observe(mapping, &path),
            WatchEvent::Closed { mapping, path } => {
                let held = self
                    .settings
                    .mappings
                    .get(mapping)
                    .is_some_and(|m| self.pauses.holds(&m.name));
                self.observe(mapping, &path);
                if !held {
                    self.inputs.push_back(Input::Closed { path });
                }
            }
            WatchEvent::Removed { mapping, path } => {
                if !path.exists() {
                    if let Some(mapping) = name(mapping, &self.settings) {
                        self.pauses.gone(&mapping, &path);
                        self.inputs.push_back(Input::Gone { mapping, path });
                    }
                }
            }
        }
    }

    /// `ev` with its mapping as the config in force places it: an event the watcher of a
    /// config since reloaded sent may name a mapping by its old place (`None`: no mapping of
    /// the config in force holds the path).
    fn placed(&self, ev: WatchEvent) -> Option<WatchEvent> {
        let place = |mapping: usize, path: &Path| {
            let holds = |m: &crate::config::Mapping| path.starts_with(&m.folder);
            match self.settings.mappings.get(mapping) {
                Some(m) if holds(m) => Some(mapping),
                _ => self.settings.mappings.iter().position(holds),
            }
        };
        Some(match ev {
            WatchEvent::Touched { mapping, path } => WatchEvent::Touched {
                mapping: place(mapping, &path)?,
                path,
            },
            WatchEvent::Closed { mapping, path } => WatchEvent::Closed {
                mapping: place(mapping, &path)?,
                path,
            },
            WatchEvent::Removed { mapping, path } => WatchEvent::Removed {
                mapping: place(mapping, &path)?,
                path,
            },
            WatchEvent::Rescan { mapping } => WatchEvent::Rescan {
                mapping: mapping.filter(|i| *i < self.settings.mappings.len()),
            },
        })
    }

    /// A file seen: to the core, or left in its folder while its mapping is paused.
    fn observe(&mut self, mapping: usize, path: &Path) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        match watch::file_meta(m, &m.folder, path) {
            Some(meta) if meta.is_dir() && m.recursive => self.rescan(Some(mapping)),
            Some(meta) if meta.is_file() && self.pauses.holds(&m.name) => {
                let name = m.name.clone();
                self.pauses.hold(&name, path);
            }
            Some(meta) if meta.is_file() => {
                // `None`: gone since the look (its event follows).
                if let Some(stat) = file_stat(path, &meta) {
                    self.inputs.push_back(Input::Observed {
                        mapping: m.name.clone(),
                        path: path.to_path_buf(),
                        stat,
                    });
                }
            }
            _ => {}
        }
    }

    fn folder_gone(&mut self, mapping: usize) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        if self.available[mapping] {
            tracing::error!(mapping = %m.name, folder = %crate::outside::path(&m.folder), "mapped folder is missing or unreadable; its entries are kept, nothing is sent from it until it is back; other mappings keep working");
        }
        self.available[mapping] = false;
        self.inputs.push_back(Input::FolderUnavailable {
            mapping: m.name.clone(),
        });
    }

    /// A missing mapped folder is back: watch it again and scan it.
    fn folder_back(&mut self, mapping: usize) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        if !m.folder.is_dir() {
            return;
        }
        if let Some(w) = self.watcher.as_mut() {
            if let Err(e) = w.rewatch(&m.folder, m.recursive) {
                tracing::error!(mapping = %m.name, "{e}");
                return;
            }
        }
        self.rescan(Some(mapping));
    }

    /// Compare a folder (or all) with what the core knows: every file found is observed.
    pub(super) fn rescan(&mut self, only: Option<usize>) {
        let found = scan_mappings(&self.settings.mappings, only);
        self.take_scans(found);
    }

    /// What [`Agent::rescan`] found (per mapping, in order; `None`: not scanned) becomes
    /// inputs. Start-up scans on another thread while it reads the ledger, then hands the
    /// scans here.
    pub(super) fn take_scans(&mut self, scans: Vec<Option<std::io::Result<Vec<watch::Found>>>>) {
        for (i, scan) in scans.into_iter().enumerate() {
            let Some(scan) = scan else {
                continue;
            };
            let Some(m) = self.settings.mappings.get(i) else {
                continue;
            };
            match scan {
                Ok(found) => {
                    if !self.available[i] {
                        tracing::info!(mapping = %m.name, "mapped folder is back");
                    }
                    self.available[i] = true;
                    let name = m.name.clone();
                    self.inputs.push_back(Input::FolderAvailable {
                        mapping: name.clone(),
                    });
                    for f in found {
                        if self.pauses.holds(&name) {
                            self.pauses.hold(&name, &f.path);
                            continue;
                        }
                        self.inputs.push_back(Input::Observed {
                            mapping: name.clone(),
                            path: f.path,
                            stat: f.stat,
                        });
                    }
                }
                Err(e) => {
                    if self.available[i] {
                        tracing::error!(mapping = %m.name, folder = %crate::outside::path(&m.folder), error = %e, "mapped folder is missing or unreadable; its entries are kept, nothing is sent from it until it is back; other mappings keep working");
                    }
                    self.available[i] = false;
                    self.inputs.push_back(Input::FolderUnavailable {
                        mapping: m.name.clone(),
                    });
                }
            }
        }
    }
}

/// Each mapping's folder scanned (`only`: that mapping alone, the others `None`), in order:
/// what [`Agent::take_scans`] takes. Start-up runs it on a thread of its own.
pub(super) fn scan_mappings(
    mappings: &[crate::config::Mapping],
    only: Option<usize>,
) -> Vec<Option<std::io::Result<Vec<watch::Found>>>> {
    mappings
        .iter()
        .enumerate()
        .map(|(i, m)| only.is_none_or(|o| o == i).then(|| watch::scan(m)))
        .collect()
}
