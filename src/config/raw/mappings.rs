//! Validation of the `[[mapping]]` tables: folder, item, globs, policies, each mapping on its
//! own and then against each other.

use super::*;

/// Every mapping checked, each on its own and against those before it: the first error of
/// each mapping, and every error of its target (a `[mapping.new_message]` table says all of
/// its own), so one run says them all. A mapping with an error in its target alone still
/// counts for the checks of the mappings after it (names, overlapping folders).
pub(super) fn validate_mappings(
    raws: Vec<RawMapping>,
    ctx: &Ctx,
    dir: &Path,
    method: RawMethod,
) -> Result<Vec<Mapping>, Vec<ConfigError>> {
    let mut mappings: Vec<Mapping> = Vec::with_capacity(raws.len());
    // Per mapping: the offset its name came from, and of its folder, for pointing at conflicts.
    let mut spots: Vec<(usize, usize)> = Vec::with_capacity(raws.len());
    // By name: the mapping's place in the file and the offset of its name.
    let mut names: HashMap<String, (usize, usize)> = HashMap::new();
    let mut errors = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let seen = Seen {
            mappings: &mappings,
            spots: &spots,
            names: &names,
        };
        let mut target_errors = Vec::new();
        let one = validate_mapping(i, &raw, ctx, dir, method, seen, &mut target_errors);
        match one {
            Ok((mapping, spot)) => {
                names.insert(mapping.name.clone(), (i, spot.0));
                spots.push(spot);
                mappings.push(mapping);
            }
            Err(e) => target_errors.push(e),
        }
        // A mapping's errors in the order of its lines.
        target_errors.sort_by_key(|e| e.line);
        errors.append(&mut target_errors);
    }
    if errors.is_empty() {
        Ok(mappings)
    } else {
        Err(errors)
    }
}

/// The mappings checked before one: what it must not repeat or overlap.
#[derive(Clone, Copy)]
struct Seen<'a> {
    mappings: &'a [Mapping],
    spots: &'a [(usize, usize)],
    names: &'a HashMap<String, (usize, usize)>,
}

/// Mapping `i`, with the offsets of its name and folder; its target's errors go to
/// `target_errors` (a stand-in target lets the other checks go on), any other ends it.
fn validate_mapping(
    i: usize,
    raw: &RawMapping,
    ctx: &Ctx,
    dir: &Path,
    method: RawMethod,
    seen: Seen<'_>,
    target_errors: &mut Vec<ConfigError>,
) -> Result<(Mapping, (usize, usize)), ConfigError> {
    let Seen {
        mappings,
        spots,
        names,
    } = seen;
    {
        let key = |k: &str| format!("mapping[{i}].{k}");
        let header = ctx.mapping_offset(i);

        // Without a folder the mapping's other keys are checked still (past it, nothing that
        // compares folders), and the folder's error is its last.
        let (folder, folder_error) = match &raw.folder {
            None => (
                PathBuf::new(),
                Some(ctx.err(
                    header,
                    key("folder"),
                    "every mapping needs folder, the folder to watch; e.g. folder = \"~/Outbox/reports\"",
                )),
            ),
            Some(f) => match path_value(f, ctx, &key("folder"), dir) {
                Ok(folder) => (folder, None),
                Err(e) => (PathBuf::new(), Some(e)),
            },
        };
        let folder_offset = raw.folder.as_ref().map(|f| f.span().start);

        let target = match (&raw.message, &raw.event, &raw.new_message) {
            (Some(m), None, None) => item_id(m, ctx, &key("message"), "message")
                .map(|id| Target::Item {
                    kind: ItemKind::Message,
                    id,
                })
                .map_err(|e| vec![e]),
            (None, Some(e), None) => item_id(e, ctx, &key("event"), "event")
                .map(|id| Target::Item {
                    kind: ItemKind::Event,
                    id,
                })
                .map_err(|e| vec![e]),
            (None, None, Some(n)) => crate::config::mail::validate(
                n.get_ref(),
                ctx,
                &key("new_message"),
                Some(n.span().start),
                dir,
            )
            .map(|t| Target::NewMessage(Box::new(t))),
            (None, None, None) => Err(vec![ctx.err(
                header,
                key("message"),
                "a mapping needs a target: message = \"ID\" or event = \"ID\" (`outbox items \
                 messages` lists ids), or a [mapping.new_message] table to mail the files",
            )]),
            (m, e, n) => {
                // Point at the last of the targets given.
                let (k, offset) = match (m, e, n) {
                    (_, _, Some(n)) => ("new_message", n.span().start),
                    (_, Some(e), _) => ("event", e.span().start),
                    (Some(m), _, _) => ("message", m.span().start),
                    _ => ("message", 0),
                };
                Err(vec![ctx.err(
                    Some(offset),
                    key(k),
                    "a mapping has exactly one target: set message, event or new_message, \
                     not two",
                )])
            }
        };
        // A stand-in past an error of the target: the mapping's other keys are checked still.
        let target = target.unwrap_or_else(|mut e| {
            target_errors.append(&mut e);
            Target::Item {
                kind: ItemKind::Message,
                id: String::new(),
            }
        });
        let (kind, item_id) = match &target {
            Target::Item { kind, id } => (*kind, id.clone()),
            Target::NewMessage(_) => (ItemKind::Message, String::new()),
        };

        let (name, name_offset) = match &raw.name {
            Some(n) => {
                let name = n.get_ref().trim();
                if name.is_empty() {
                    return Err(ctx.at(
                        n,
                        key("name"),
                        "name is empty; remove it to use the folder's name",
                    ));
                }
                (name.to_owned(), n.span().start)
            }
            None => match (folder.file_name(), &raw.folder) {
                (Some(f), Some(folder_raw)) => {
                    (f.to_string_lossy().into_owned(), folder_raw.span().start)
                }
                (_, Some(folder_raw)) if folder_error.is_none() => {
                    return Err(ctx.at(
                        folder_raw,
                        key("name"),
                        "cannot take a name from this folder; set name",
                    ))
                }
                // Named after a folder that is in error: said by that error.
                _ => (String::new(), folder_offset.or(header).unwrap_or(0)),
            },
        };
        if let Some(&(j, at)) = names.get(&name).filter(|_| !name.is_empty()) {
            return Err(ctx.err(
                Some(name_offset),
                key("name"),
                format!(
                    "mapping name \"{name}\" is already used by mapping[{j}] (line {}); names must \
                     be unique: set a different name",
                    line_of(ctx.text, at)
                ),
            ));
        }

        let user = match &raw.user {
            Some(u) => {
                let user = u.get_ref().trim();
                if user.is_empty() {
                    return Err(ctx.at(
                        u,
                        key("user"),
                        "user is empty; write \"me\", a UPN or a user id",
                    ));
                }
                user.to_owned()
            }
            None => DEFAULT_USER.to_owned(),
        };
        if matches!(method, RawMethod::ClientCredentials) && user.eq_ignore_ascii_case("me") {
            let offset = raw.user.as_ref().map(|u| u.span().start).or(header);
            return Err(ctx.err(
                offset,
                key("user"),
                "auth.method = \"client_credentials\" signs in as the app, which has no /me: set \
                 user to the mailbox's UPN or id, e.g. user = \"reports@contoso.com\"",
            ));
        }

        let (include, include_patterns) =
            globs(raw.include.as_ref(), ctx, &key("include"), DEFAULT_INCLUDE)?;
        if include_patterns.is_empty() {
            let offset = raw.include.as_ref().map(|v| v.span().start);
            return Err(ctx.err(
                offset,
                key("include"),
                "include is empty, so nothing would be sent; e.g. [\"*\"]",
            ));
        }
        let (exclude, exclude_patterns) =
            globs(raw.exclude.as_ref(), ctx, &key("exclude"), DEFAULT_EXCLUDE)?;

        let after = match raw.after.as_ref().map(|v| *v.get_ref()) {
            Some(RawAfter::Keep) | None => After::Keep,
            Some(RawAfter::Move) => After::Move,
            Some(RawAfter::Delete) => After::Delete,
        };
        if let Some(e) = folder_error {
            // Nothing below compares with a folder that is not known.
            return Err(e);
        }
        let Some(folder_raw) = &raw.folder else {
            // (Said above: no folder is a `folder_error`.)
            return Err(ctx.err(header, key("folder"), "every mapping needs folder"));
        };
        let sent_dir = match &raw.sent_dir {
            Some(v) => path_value(v, ctx, &key("sent_dir"), &folder)?,
            None => folder.join(DEFAULT_SENT_DIR),
        };
        // Moving sent files into (or above) the watched folder would feed them back in.
        let sent_offset = raw.sent_dir.as_ref().map(|v| v.span().start);
        if same_or_inside(&folder, &sent_dir) {
            return Err(ctx.err(
                sent_offset,
                key("sent_dir"),
                "sent_dir must not be the mapped folder or contain it; e.g. \"sent\"",
            ));
        }
        let failed_dir = match &raw.failed_dir {
            Some(v) => {
                let p = path_value(v, ctx, &key("failed_dir"), &folder)?;
                if same_or_inside(&folder, &p) {
                    return Err(ctx.at(
                        v,
                        key("failed_dir"),
                        "failed_dir must not be the mapped folder or contain it; e.g. \"failed\"",
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let if_exists = match raw.if_exists.as_ref().map(|v| *v.get_ref()) {
            Some(RawIfExists::Skip) | None => IfExists::Skip,
            Some(RawIfExists::Attach) => IfExists::Attach,
        };
        let on_change = match raw.on_change.as_ref().map(|v| *v.get_ref()) {
            Some(RawOnChange::Replace) | None => crate::config::OnChange::Replace,
            Some(RawOnChange::Add) => crate::config::OnChange::Add,
        };

        // One folder (or a folder inside it) feeding two mappings would attach files twice.
        for (j, other) in mappings.iter().enumerate() {
            if same_or_inside(&folder, &other.folder) || same_or_inside(&other.folder, &folder) {
                let how = if same_path(&folder, &other.folder) {
                    "is the same folder as"
                } else if same_or_inside(&folder, &other.folder) {
                    "is inside the folder of"
                } else {
                    "contains the folder of"
                };
                return Err(ctx.at(
                    folder_raw,
                    key("folder"),
                    format!(
                        "{} {how} mapping \"{}\" (line {}); mapped folders must not overlap: \
                         use separate folders",
                        folder.display(),
                        other.name,
                        line_of(ctx.text, spots[j].1)
                    ),
                ));
            }
        }

        // Sent or failed files moved into another mapping's folder would be attached there.
        for other in mappings {
            let dirs = [
                ("sent_dir", Some(&sent_dir), sent_offset),
                (
                    "failed_dir",
                    failed_dir.as_ref(),
                    raw.failed_dir.as_ref().map(|v| v.span().start),
                ),
            ];
            for (k, dir, offset) in dirs {
                if dir.is_some_and(|d| same_or_inside(d, &other.folder)) {
                    return Err(ctx.err(
                        offset.or(Some(folder_raw.span().start)),
                        key(k),
                        format!(
                            "{k} is inside the folder of mapping \"{}\", which would attach the \
                             files moved there; choose a folder outside every mapped folder",
                            other.name
                        ),
                    ));
                }
            }
            let mut theirs = std::iter::once(&other.sent_dir).chain(other.failed_dir.as_ref());
            if let Some(dir) = theirs.find(|d| same_or_inside(&folder, d)) {
                return Err(ctx.at(
                    folder_raw,
                    key("folder"),
                    format!(
                        "{} is inside {}, where mapping \"{}\" moves its files; choose a folder \
                         outside it",
                        folder.display(),
                        dir.display(),
                        other.name
                    ),
                ));
            }
        }

        let spot = (name_offset, folder_raw.span().start);
        Ok((
            Mapping {
                name,
                folder,
                kind,
                item_id,
                target,
                user,
                include,
                exclude,
                include_patterns,
                exclude_patterns,
                recursive: raw.recursive.unwrap_or(false),
                after,
                sent_dir,
                failed_dir,
                follow_symlinks: raw.follow_symlinks.unwrap_or(false),
                allow_hard_links: raw.allow_hard_links.unwrap_or(false),
                cross_mounts: raw.cross_mounts.unwrap_or(false),
                if_exists,
                on_change,
            },
            spot,
        ))
    }
}

/// A `message` or `event` id, trimmed and not empty.
pub(super) fn item_id(
    v: &Spanned<String>,
    ctx: &Ctx,
    key: &str,
    what: &str,
) -> Result<String, ConfigError> {
    let id = v.get_ref().trim().to_owned();
    if id.is_empty() {
        return Err(ctx.at(
            v,
            key,
            format!("{what} id is empty; `outbox items {what}s` lists ids"),
        ));
    }
    Ok(id)
}

pub(super) fn globs(
    v: Option<&Spanned<Vec<Spanned<String>>>>,
    ctx: &Ctx,
    key: &str,
    default: &[&str],
) -> Result<(globset::GlobSet, Vec<String>), ConfigError> {
    let patterns: Vec<(String, Option<usize>)> = match v {
        Some(list) => list
            .get_ref()
            .iter()
            .map(|p| (p.get_ref().clone(), Some(p.span().start)))
            .collect(),
        None => default.iter().map(|p| ((*p).to_owned(), None)).collect(),
    };
    let mut builder = globset::GlobSetBuilder::new();
    for (j, (pattern, offset)) in patterns.iter().enumerate() {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                ctx.err(
                    *offset,
                    format!("{key}[{j}]"),
                    format!(
                        "bad glob \"{pattern}\": {}; globs match file names, e.g. \"*.pdf\"",
                        e.kind()
                    ),
                )
            })?;
        builder.add(glob);
    }
    let set = builder.build().map_err(|e| {
        ctx.err(
            v.map(|l| l.span().start),
            key,
            format!("bad glob list: {e}"),
        )
    })?;
    Ok((set, patterns.into_iter().map(|(p, _)| p).collect()))
}
