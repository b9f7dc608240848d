//! Runs by owner: how run ids and record keys are formed so that one key's
//! runs can be listed with a KV prefix, the summary kept beside each record
//! (KV metadata, written with the record: no write of its own), and the
//! paging of `GET /runs`.
//!
//! A run id is `{owner tag}-{inverted start time}-{random}`: the tag (the
//! first 16 hex digits of the owner's key hash) puts a key's runs under one
//! prefix, and the inverted time makes a listing newest first. The record
//! lives at `runs/{tag}/{run_id}`. Ids of the older form (32 hex digits)
//! keep their records at `run:{run_id}` and are not listed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::answer::{ListedRun, ListedSummary};
use super::error::EngineError;
use super::record::RunRecord;

/// Hex digits of the owner's key hash that prefix its runs' keys.
const TAG_LEN: usize = 16;
/// Start times are stored as this minus the time (11 hex digits, good to
/// the year 2527), so that later runs sort first.
const TIME_CEILING: u64 = 0xfff_ffff_ffff;
const TIME_LEN: usize = 11;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// KV pages one listing request reads at most while filtering by status; past
/// it the answer has fewer runs than asked and a cursor to go on from.
pub const MAX_PAGES_PER_REQUEST: usize = 10;
/// Keys asked of KV per page (its maximum).
pub const KV_PAGE: usize = 1000;

pub const STATUSES: [&str; 5] = ["running", "paused", "completed", "failed", "cancelled"];

/// The prefix under which `owner`'s run records are kept.
pub fn owner_prefix(owner: &str) -> String {
    format!("runs/{}/", owner_tag(owner))
}

fn owner_tag(owner: &str) -> &str {
    owner.get(..TAG_LEN).unwrap_or(owner)
}

/// The prefix under which `owner`'s stored workflows are kept.
pub fn workflow_prefix(owner: &str) -> String {
    format!("workflows/{}/", owner_tag(owner))
}

/// A stored workflow's name: what fits in a URL path segment unescaped.
pub fn valid_workflow_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

/// A new run id for `owner`, started at `now`, with `random` (hex) making it
/// unguessable.
pub fn new_run_id(owner: &str, now: u64, random: &str) -> String {
    let inverted = TIME_CEILING.saturating_sub(now);
    format!("{}-{inverted:0TIME_LEN$x}-{random}", owner_tag(owner))
}

/// Where a run's record is kept in KV.
pub fn record_key(run_id: &str) -> String {
    match owner_of_id(run_id) {
        Some(tag) => format!("runs/{tag}/{run_id}"),
        None => format!("run:{run_id}"),
    }
}

/// The owner tag of a run id of the listed form.
fn owner_of_id(run_id: &str) -> Option<&str> {
    let mut parts = run_id.splitn(3, '-');
    let (tag, time, random) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(tag, TAG_LEN) && hex(time, TIME_LEN) && !random.is_empty()).then_some(tag)
}

/// What a listing shows of a run, kept as the metadata of its KV key (KV
/// allows 1024 bytes; the workflow name is cut to fit). Written with every
/// record and read back by listings: the shape of keys already in KV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub status: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub open_waits: usize,
    /// Task ids of its open waits, then of those most recently closed: what
    /// the deprecated `GET /executions/{task_id}` finds a run by. Bounded
    /// (KV metadata is at most 1024 bytes); long ids are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
}

const MAX_NAME_IN_SUMMARY: usize = 120;
const MAX_TASK_IN_SUMMARY: usize = 128;
const MAX_TASKS_BYTES: usize = 480;

impl RunSummary {
    pub fn of(record: &RunRecord) -> Self {
        // Cut on a character boundary, in bytes: the whole summary must stay
        // under KV's 1024-byte metadata limit, or the record's write fails.
        let workflow = record.workflow.as_deref().map(name_in_summary);
        let mut open: Vec<(&u64, &String)> = record
            .waits
            .values()
            .map(|w| (&w.since, &w.task_id))
            .collect();
        open.sort_by(|a, b| b.0.cmp(a.0));
        let mut closed: Vec<(&u64, &String)> = record
            .closed
            .values()
            .map(|c| (&c.at, &c.task_id))
            .collect();
        closed.sort_by(|a, b| b.0.cmp(a.0));
        let mut tasks: Vec<String> = Vec::new();
        let mut bytes = 0;
        for (_, task) in open.into_iter().chain(closed) {
            if task.len() > MAX_TASK_IN_SUMMARY || tasks.contains(task) {
                continue;
            }
            if bytes + task.len() > MAX_TASKS_BYTES {
                break;
            }
            bytes += task.len() + 3;
            tasks.push(task.clone());
        }
        Self {
            workflow,
            status: record.status.name().to_string(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            open_waits: record.waits.len(),
            tasks,
        }
    }
}

/// A workflow's name as a summary keeps it: cut on a character boundary,
/// in bytes, so the whole summary stays under KV's 1024-byte metadata limit
/// (or the record's write would fail).
fn name_in_summary(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME_IN_SUMMARY);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A stored workflow as kept in KV at `workflows/{owner tag}/{name}`. The
/// owner is kept whole: the tag in the key is only the start of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWorkflow {
    pub owner: String,
    pub name: String,
    pub graph: Value,
    pub updated_at: u64,
}

impl StoredWorkflow {
    /// The workflow stored as `text`, if it is `owner`'s (two owners whose
    /// tags collide share a prefix, never a workflow).
    pub fn read(text: &str, owner: &str) -> Option<Self> {
        serde_json::from_str::<Self>(text)
            .ok()
            .filter(|w| w.owner == owner)
    }
}

/// What `GET /workflows` shows of a stored workflow beside its name, kept
/// as the metadata of its KV key (a listing reads no values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowSummary {
    pub updated_at: u64,
    /// How many nodes its graph has.
    #[schemars(range(min = 1))]
    pub nodes: usize,
}

/// Where a listing goes on: a KV cursor (none for the first page) and how
/// many keys of that page were already shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListCursor {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "c")]
    pub kv: Option<String>,
    #[serde(default, rename = "o")]
    pub skip: usize,
}

impl ListCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Result<Self, EngineError> {
        let bad = || EngineError::InvalidRequest("cursor is not one this API returned".into());
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let cursor: Self = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if cursor.skip > KV_PAGE {
            return Err(bad());
        }
        Ok(cursor)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Statuses to show; empty shows all.
    pub statuses: Vec<String>,
    /// Only runs of this workflow (its name as the summary keeps it).
    pub workflow: Option<String>,
    pub limit: usize,
    pub cursor: ListCursor,
}

impl ListQuery {
    /// From the query string of `GET /runs`.
    pub fn parse<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Self, EngineError> {
        let mut query = Self {
            statuses: Vec::new(),
            workflow: None,
            limit: DEFAULT_LIMIT,
            cursor: ListCursor::default(),
        };
        for (key, value) in pairs {
            match key {
                "status" => {
                    for status in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if !STATUSES.contains(&status) {
                            return Err(EngineError::InvalidRequest(format!(
                                "status must be one of {}",
                                STATUSES.join(", ")
                            )));
                        }
                        query.statuses.push(status.to_string());
                    }
                }
                "limit" => {
                    query.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            EngineError::InvalidRequest(format!(
                                "limit must be a whole number from 1 to {MAX_LIMIT}"
                            ))
                        })?;
                }
                "cursor" => query.cursor = ListCursor::decode(value)?,
                // Matched against the name kept in each run's summary, so
                // a long name is cut the same way before comparing.
                "workflow" if !value.is_empty() => query.workflow = Some(name_in_summary(value)),
                _ => {}
            }
        }
        Ok(query)
    }

    /// Whether only some runs are shown: a filter reads whole KV pages.
    pub fn is_filtered(&self) -> bool {
        !self.statuses.is_empty() || self.workflow.is_some()
    }

    fn shows(&self, summary: &RunSummary) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&summary.status))
            && self
                .workflow
                .as_ref()
                .is_none_or(|w| summary.workflow.as_ref() == Some(w))
    }
}

/// One key of a KV listing page, with its summary (none when the key was
/// written without one).
#[derive(Debug, Clone)]
pub struct ListedKey {
    pub name: String,
    pub summary: Option<RunSummary>,
}

/// After one page: the listing is full or exhausted (`Done`, with the cursor
/// to go on from, if any), or the next KV page is needed.
#[derive(Debug, PartialEq)]
pub enum PageEnd {
    Done(Option<ListCursor>),
    Next(ListCursor),
}

/// Adds the runs of one KV page (read at `at`) that the query shows to
/// `runs`, starting after the keys `at.skip` says were shown already.
pub fn take_page(
    query: &ListQuery,
    at: &ListCursor,
    keys: &[ListedKey],
    next_kv: Option<String>,
    runs: &mut Vec<ListedRun>,
) -> PageEnd {
    for (i, key) in keys.iter().enumerate().skip(at.skip) {
        // A key written without a summary (it cannot be filtered) is shown
        // only to an unfiltered listing.
        let shown = match &key.summary {
            Some(summary) => query.shows(summary),
            None => !query.is_filtered(),
        };
        if shown {
            runs.push(entry(key));
        }
        if runs.len() >= query.limit {
            let rest_of_page = i + 1 < keys.len();
            return PageEnd::Done(if rest_of_page {
                Some(ListCursor {
                    kv: at.kv.clone(),
                    skip: i + 1,
                })
            } else {
                next_kv.map(|kv| ListCursor {
                    kv: Some(kv),
                    skip: 0,
                })
            });
        }
    }
    match next_kv {
        Some(kv) => PageEnd::Next(ListCursor {
            kv: Some(kv),
            skip: 0,
        }),
        None => PageEnd::Done(None),
    }
}

fn entry(key: &ListedKey) -> ListedRun {
    let run_id = key.name.rsplit('/').next().unwrap_or(&key.name);
    ListedRun {
        run_id: run_id.to_string(),
        // `workflow` is shown as null for a run not started from one.
        summary: key.summary.as_ref().map(|s| ListedSummary {
            workflow: s.workflow.clone(),
            status: s.status.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            open_waits: s.open_waits,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OWNER: &str = "61e6c2936fbaef87222b97c058baac3cb753e68dd6362842f7d59569c3b9ec38";

    #[test]
    fn run_ids_sort_newest_first_under_their_owner() {
        let older = new_run_id(OWNER, 1_700_000_000_000, "aa");
        let newer = new_run_id(OWNER, 1_700_000_000_001, "aa");
        assert!(newer < older);
        assert!(record_key(&older).starts_with(&owner_prefix(OWNER)));
        assert_eq!(older.len(), 16 + 1 + 11 + 1 + 2);
        // Ids of the first release keep their keys.
        assert_eq!(
            record_key("0123456789abcdef0123456789abcdef"),
            "run:0123456789abcdef0123456789abcdef"
        );
        assert_eq!(record_key("zz-1-2"), "run:zz-1-2");
    }

    fn key(n: usize, status: &str) -> ListedKey {
        ListedKey {
            name: format!("runs/t/{n}"),
            summary: Some(RunSummary {
                workflow: None,
                status: status.into(),
                created_at: 1,
                updated_at: 2,
                open_waits: 0,
                tasks: Vec::new(),
            }),
        }
    }

    #[test]
    fn pages_resume_inside_and_across_kv_pages() {
        let keys: Vec<ListedKey> = (0..5)
            .map(|n| key(n, if n % 2 == 0 { "paused" } else { "completed" }))
            .collect();
        let query = ListQuery::parse([("status", "paused"), ("limit", "2")].into_iter()).unwrap();
        let mut runs = Vec::new();
        let end = take_page(
            &query,
            &ListCursor::default(),
            &keys,
            Some("k2".into()),
            &mut runs,
        );
        assert_eq!(runs.len(), 2);
        let PageEnd::Done(Some(cursor)) = end else {
            panic!("{end:?}")
        };
        assert_eq!(cursor, ListCursor { kv: None, skip: 3 });
        let cursor = ListCursor::decode(&cursor.encode()).unwrap();
        let mut runs = Vec::new();
        let end = take_page(&query, &cursor, &keys, Some("k2".into()), &mut runs);
        assert_eq!(runs, vec![entry(&keys[4])]);
        assert_eq!(
            end,
            PageEnd::Next(ListCursor {
                kv: Some("k2".into()),
                skip: 0
            })
        );
        let mut runs = Vec::new();
        assert_eq!(
            take_page(&query, &cursor, &keys, None, &mut runs),
            PageEnd::Done(None)
        );
    }

    #[test]
    fn a_summary_always_fits_kv_metadata() {
        use crate::core::plan::{plan_from_json, Directory, GraphLimits};
        use crate::core::run::{Run, Settings};
        let graph = serde_json::json!({"nodes": [{"id": "a", "type": "Input"}], "edges": []});
        let plan = plan_from_json(&graph, &Directory::default(), GraphLimits::default()).unwrap();
        let mut run = Run::start(plan, "r".into(), Default::default(), 0, Settings::default());
        run.record.workflow = Some("名".repeat(500));
        for i in 0..50 {
            let wait = crate::core::record::Wait {
                wait_id: format!("n{i}"),
                task_id: format!("{i}-{}", "t".repeat(120)),
                node_id: "a".into(),
                item: None,
                since: i,
                expires_at: 1,
                poll: None,
                progress: None,
                heartbeat_at: None,
                events: Vec::new(),
            };
            run.record.waits.insert(wait.wait_id.clone(), wait);
        }
        let summary = RunSummary::of(&run.record);
        let size = serde_json::to_string(&summary).unwrap().len();
        assert!(size <= 1024, "{size} bytes");
        assert!(!summary.tasks.is_empty());
    }

    #[test]
    fn metadata_keeps_the_shape_already_in_kv() {
        // A summary as every release wrote it, without the optional fields.
        let kept = json!({"status": "paused", "created_at": 1, "updated_at": 2, "open_waits": 1});
        let summary: RunSummary = serde_json::from_value(kept.clone()).unwrap();
        assert_eq!(serde_json::to_value(&summary).unwrap(), kept);
        let full = json!({
            "workflow": "w", "status": "completed", "created_at": 1, "updated_at": 2,
            "open_waits": 0, "tasks": ["t1"],
        });
        let summary: RunSummary = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(serde_json::to_value(&summary).unwrap(), full);
        // A listing shows every field but the task ids, `workflow` as null
        // when there is none; a key without a summary shows its run id.
        let listed = ListedKey {
            name: "runs/t/r1".into(),
            summary: Some(RunSummary {
                workflow: None,
                tasks: vec!["t1".into()],
                ..summary
            }),
        };
        assert_eq!(
            serde_json::to_value(entry(&listed)).unwrap(),
            json!({
                "run_id": "r1", "workflow": null, "status": "completed",
                "created_at": 1, "updated_at": 2, "open_waits": 0,
            })
        );
        let bare = ListedKey {
            name: "runs/t/r2".into(),
            summary: None,
        };
        assert_eq!(
            serde_json::to_value(entry(&bare)).unwrap(),
            json!({ "run_id": "r2" })
        );

        let workflow = json!({"updated_at": 5, "nodes": 3});
        let summary: WorkflowSummary = serde_json::from_value(workflow.clone()).unwrap();
        assert_eq!(serde_json::to_value(summary).unwrap(), workflow);
        let stored = json!({"owner": OWNER, "name": "w", "graph": {"nodes": []}, "updated_at": 5});
        let read = StoredWorkflow::read(&stored.to_string(), OWNER).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), stored);
        assert_eq!(
            StoredWorkflow::read(&stored.to_string(), "someone else"),
            None
        );
    }

    #[test]
    fn bad_queries_are_refused() {
        for (k, v) in [
            ("status", "sleeping"),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "x"),
            ("cursor", "!!"),
        ] {
            assert!(ListQuery::parse([(k, v)].into_iter()).is_err(), "{k}={v}");
        }
        let q = ListQuery::parse([("status", "paused,failed")].into_iter()).unwrap();
        assert_eq!(q.statuses, vec!["paused", "failed"]);
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(q.workflow, None);
    }

    #[test]
    fn a_workflow_filter_reads_only_the_summaries() {
        let q =
            ListQuery::parse([("workflow", "nightly"), ("status", "paused")].into_iter()).unwrap();
        assert!(q.is_filtered());
        let listed = |workflow: Option<&str>, status: &str| ListedKey {
            name: format!("runs/t/{status}-{}", workflow.unwrap_or("none")),
            summary: Some(RunSummary {
                workflow: workflow.map(str::to_string),
                status: status.into(),
                created_at: 1,
                updated_at: 2,
                open_waits: 0,
                tasks: Vec::new(),
            }),
        };
        let keys = vec![
            listed(Some("nightly"), "paused"),
            listed(Some("nightly"), "failed"),
            listed(Some("nightly-2"), "paused"),
            listed(None, "paused"),
            ListedKey {
                name: "runs/t/bare".into(),
                summary: None,
            },
        ];
        let mut runs = Vec::new();
        let end = take_page(&q, &ListCursor::default(), &keys, None, &mut runs);
        assert_eq!(end, PageEnd::Done(None));
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["paused-nightly"]);
        // A name longer than a summary keeps is compared as the summary keeps it.
        let long = "w".repeat(300);
        let q = ListQuery::parse([("workflow", long.as_str())].into_iter()).unwrap();
        assert_eq!(q.workflow.as_deref(), Some(&long[..MAX_NAME_IN_SUMMARY]));
    }
}
