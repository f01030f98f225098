//! The operations commands: `recover`, `gc`, `inspect`; and the intent census
//! the demo shares.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use flowstate::core::intent::{attr as intent_attr, status};
use flowstate::core::layout::{self, CHILD_SEPARATOR};
use flowstate::core::oplog::attr as op_attr;
use flowstate::store::{Item, StateStoreExt};
use flowstate::{InstanceId, Runtime, Settings, StateStore};
use serde_json::Value;

use crate::travel;
use crate::{CliError, CliResult};

/// One intent, as the census sees it.
#[derive(Clone, Debug)]
pub struct IntentInfo {
    /// Instance id, children shown as `parent/step`.
    pub id: String,
    /// Registered function name.
    pub function: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// Lease expiry (ms since the epoch).
    pub lease_until: u64,
}

/// Every intent in the store (what one collector pass scans too).
pub async fn intents(store: &dyn StateStore, shards: u16) -> CliResult<Vec<IntentInfo>> {
    let mut out = Vec::new();
    for shard in 0..shards {
        let rows = store
            .scan_all(&layout::INTENTS, &layout::intent_partition(shard), usize::MAX)
            .await
            .map_err(|e| CliError::msg(format!("scanning intents: {e}")))?;
        for (sort, item) in rows {
            out.push(IntentInfo {
                id: String::from_utf8_lossy(&sort).replace(CHILD_SEPARATOR, "/"),
                function: item.get_str(intent_attr::FUNCTION).unwrap_or("?").to_string(),
                status: item.get_str(intent_attr::STATUS).unwrap_or("?").to_string(),
                lease_until: item.get(intent_attr::LEASE_UNTIL).and_then(Value::as_u64).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `flowstate recover`: one collector pass.
pub async fn recover(settings: &Settings, demo_functions: bool, out: &mut dyn Write) -> CliResult<()> {
    let store = settings.open_store().await?;
    let builder = Runtime::builder(store.clone()).config(settings.engine.clone());
    let rt = if demo_functions {
        travel::register(builder, travel::PaymentProvider::new(store.clone())).build()
    } else {
        builder.build()
    };
    let registered = rt.functions();
    writeln!(out, "store       {}", settings.store)?;
    if registered.is_empty() {
        writeln!(out, "functions   none registered: this CLI runs no application code")?;
    } else {
        writeln!(out, "functions   the demo's: {} (--demo-functions)", registered.join(", "))?;
    }

    let now = now_ms();
    let census = intents(store.as_ref(), settings.engine.intent_shards).await?;
    let running: Vec<&IntentInfo> = census.iter().filter(|i| i.status == status::RUNNING).collect();
    let expired: Vec<&IntentInfo> = running.iter().copied().filter(|i| i.lease_until <= now).collect();
    writeln!(
        out,
        "before      {} intents: {} unfinished, {} of them with an expired lease",
        census.len(),
        running.len(),
        expired.len()
    )?;

    let report = rt.recover().await?;
    writeln!(
        out,
        "pass        scanned {}, expired {}, re-driven to completion {}, taken over by another runtime {}, failed {}",
        report.scanned, report.expired, report.completed, report.busy, report.errors
    )?;
    if !report.unknown_functions.is_empty() {
        let list: Vec<String> = report.unknown_functions.iter().map(|(f, n)| format!("{f} ×{n}")).collect();
        writeln!(out, "unknown     expired intents of functions this CLI does not have: {}", list.join(", "))?;
        writeln!(
            out,
            "            they stay unfinished until a runtime with those functions registered runs recover()\n            (your application, or `flowstate recover --demo-functions` for the demo's)"
        )?;
        let n: usize = report.unknown_functions.values().sum();
        return Err(CliError::msg(format!("{n} expired instance(s) need functions this CLI does not register")));
    }
    if report.errors > 0 {
        return Err(CliError::msg(format!(
            "{} expired instance(s) could not be re-driven (see above); the next pass retries them",
            report.errors
        )));
    }
    Ok(())
}

/// `flowstate gc`: one garbage-collection pass.
pub async fn gc(settings: &Settings, window: Option<Duration>, full: bool, out: &mut dyn Write) -> CliResult<()> {
    let mut config = settings.engine.clone();
    if let Some(w) = window {
        config = config.gc_window(w);
    }
    let store = settings.open_store().await?;
    let rt = Runtime::builder(store).config(config.clone()).build();
    writeln!(out, "store       {}", settings.store)?;
    writeln!(out, "window      instances finished more than {} ago", humanize(config.gc_window))?;
    if full {
        writeln!(out, "pass        full: every intent scanned")?;
    }
    let r = if full { rt.gc_full().await? } else { rt.gc().await? };
    if r.skipped {
        writeln!(out, "skipped     another GC pass holds the lease")?;
        return Ok(());
    }
    writeln!(out, "scanned                 {} intents", r.scanned)?;
    writeln!(out, "instances collected     {}", r.instances_collected)?;
    writeln!(out, "log entries deleted     {}", r.log_entries_deleted)?;
    writeln!(out, "write entries removed   {}", r.write_entries_removed)?;
    writeln!(out, "rows unlinked           {}", r.rows_unlinked)?;
    writeln!(out, "rows deleted            {}", r.rows_deleted)?;
    writeln!(out, "tombstones deleted      {}", r.tombstones_deleted)?;
    Ok(())
}

/// The ids `raw` may mean: itself, and (for `parent/5` or `parent/5/2`) a
/// child instance named by its parent and the calling steps.
fn candidates(raw: &str) -> Vec<InstanceId> {
    let mut out: Vec<InstanceId> = InstanceId::new(raw).into_iter().collect();
    let parts: Vec<&str> = raw.split('/').collect();
    for k in 1..parts.len() {
        let (base, steps) = parts.split_at(parts.len() - k);
        let Ok(steps) = steps.iter().map(|s| s.parse::<u32>()).collect::<Result<Vec<_>, _>>() else { break };
        if let Ok(mut id) = InstanceId::new(base.join("/")) {
            for s in steps {
                id = id.child(s);
            }
            out.push(id);
        }
    }
    out
}

/// `flowstate inspect`: an instance's intent and its steps.
pub async fn inspect(settings: &Settings, raw: &str, out: &mut dyn Write) -> CliResult<()> {
    let store = settings.open_store().await?;
    let rt = Runtime::builder(store).config(settings.engine.clone()).build();
    let ids = candidates(raw);
    if ids.is_empty() {
        return Err(CliError::msg(format!("{raw:?} is not a valid instance id")));
    }
    for id in ids {
        let report = rt.inspect(&id).await?;
        if report.intent.is_none() && report.steps.is_empty() {
            continue;
        }
        return print_instance(&rt, &id, report.intent, report.steps, out).await;
    }
    Err(CliError::msg(format!(
        "instance {raw:?} not found in {} (no intent and no logged steps; collected instances keep only a tombstone intent)",
        settings.store
    )))
}

async fn print_instance(
    rt: &Runtime,
    id: &InstanceId,
    intent: Option<Item>,
    steps: Vec<(u32, Item)>,
    out: &mut dyn Write,
) -> CliResult<()> {
    let now = now_ms();
    writeln!(out, "instance {id}")?;
    let parent = id.as_str().rsplit_once(CHILD_SEPARATOR);
    let mut touched = Value::Null;
    match &intent {
        Some(item) => {
            writeln!(out, "intent")?;
            let field = |name: &str| item.get(name).cloned().unwrap_or(Value::Null);
            writeln!(out, "  function     {}", item.get_str(intent_attr::FUNCTION).unwrap_or("?"))?;
            writeln!(out, "  status       {}", item.get_str(intent_attr::STATUS).unwrap_or("?"))?;
            writeln!(out, "  attempts     {}", field(intent_attr::ATTEMPTS))?;
            writeln!(out, "  started      {}", when(field(intent_attr::STARTED_AT).as_u64(), now))?;
            if item.get_str(intent_attr::STATUS) == Some(status::RUNNING) {
                writeln!(out, "  lease until  {}", when(field(intent_attr::LEASE_UNTIL).as_u64(), now))?;
            } else {
                writeln!(out, "  finished     {}", when(field(intent_attr::FINISHED_AT).as_u64(), now))?;
            }
            if let Some(caller) = item.get(intent_attr::CALLER).and_then(Value::as_array) {
                let c = caller.first().and_then(Value::as_str).unwrap_or("?").replace(CHILD_SEPARATOR, "/");
                let s = caller.get(1).cloned().unwrap_or(Value::Null);
                writeln!(out, "  caller       {c} (step {s}, asynchronous)")?;
            }
            if let Some(input) = item.get(intent_attr::INPUT) {
                writeln!(out, "  input        {}", summary(input, 100))?;
            }
            if let Some(result) = item.get(intent_attr::RESULT) {
                writeln!(out, "  result       {}", outcome(result, 100))?;
            }
            if item.get(intent_attr::COMPACTED).is_some() {
                writeln!(out, "  compacted    yes: garbage-collected, only this tombstone is left")?;
            }
            touched = field(intent_attr::TOUCHED);
        }
        None => match parent {
            Some((p, step)) => {
                writeln!(
                    out,
                    "intent       none: called synchronously; step {step} of {} is its intent",
                    p.replace(CHILD_SEPARATOR, "/")
                )?;
                let caller = InstanceId::new(p.to_string()).ok();
                if let (Some(caller), Ok(step)) = (caller, step.parse::<u32>()) {
                    let entry = rt.inspect(&caller).await?.steps.into_iter().find(|(s, _)| *s == step);
                    if let Some((_, e)) = entry {
                        touched = e.get(op_attr::TOUCHED).cloned().unwrap_or(Value::Null);
                        if let Some(result) = e.get(op_attr::RESULT) {
                            writeln!(out, "  result       {}", outcome(result, 100))?;
                        }
                    }
                }
            }
            None => writeln!(out, "intent       none")?,
        },
    }

    // Rows: (step, kind, target, outcome).
    let mut rows: Vec<(u32, String, String, String)> = Vec::new();
    for (step, item) in &steps {
        let kind = item.get_str(op_attr::KIND).unwrap_or("?").to_string();
        let target = target(item.get(op_attr::NAME).unwrap_or(&Value::Null));
        let value = match kind.as_str() {
            "invoke" | "invoke_async" => {
                let callee = item.get_str(op_attr::CALLEE).unwrap_or("?").replace(CHILD_SEPARATOR, "/");
                match item.get(op_attr::RESULT) {
                    Some(r) => format!("callee {callee}: {}", outcome(r, 60)),
                    None if kind == "invoke" => format!("callee {callee}: no result yet"),
                    None => format!("callee {callee}"),
                }
            }
            _ => summary(item.get(op_attr::VALUE).unwrap_or(&Value::Null), 60),
        };
        rows.push((*step, kind, target, value));
    }
    let writes = written_entries(rt, id, &touched).await?;
    let writes_known = !writes.is_empty() || !touched.is_null();
    rows.extend(writes);
    rows.sort_by_key(|r| r.0);

    writeln!(out, "steps ({})", rows.len())?;
    if rows.is_empty() {
        writeln!(out, "  (none logged)")?;
    } else {
        let tw = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(6).clamp(6, 40);
        writeln!(out, "  {:>4}  {:<12}  {:<tw$}  value", "step", "kind", "target")?;
        for (step, kind, target, value) in &rows {
            writeln!(out, "  {step:>4}  {kind:<12}  {:<tw$}  {value}", truncate(target, 40))?;
        }
    }
    if !writes_known {
        writeln!(
            out,
            "  (writes are logged in the data rows they wrote and listed here once the instance has finished;\n   gaps in the step numbers are this instance's writes)"
        )?;
    }
    Ok(())
}

/// The write-log entries an instance made, from its `touched` list: `(step,
/// kind, "table/key", outcome)`.
async fn written_entries(
    rt: &Runtime,
    id: &InstanceId,
    touched: &Value,
) -> CliResult<Vec<(u32, String, String, String)>> {
    let mut out = Vec::new();
    let mut values: BTreeMap<(String, String), Vec<flowstate::RowInfo>> = BTreeMap::new();
    for t in touched.as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(partition), Some(entry)) =
            (t.get(0).and_then(Value::as_str).and_then(layout::unhex), t.get(2).and_then(Value::as_str))
        else {
            continue;
        };
        let Some((table, key)) = layout::split_data_partition(&partition) else { continue };
        let Some(step) = entry.split_once(':').and_then(|(s, inst)| (inst == id.as_str()).then_some(s)) else {
            continue;
        };
        let Ok(step) = step.parse::<u32>() else { continue };
        let rows = match values.get(&(table.clone(), key.clone())) {
            Some(rows) => rows.clone(),
            None => {
                let rows = rt.key_rows(&table, &key).await?;
                values.insert((table.clone(), key.clone()), rows.clone());
                rows
            }
        };
        let logged = rows.iter().find_map(|r| r.entries.get(entry)).cloned();
        let (kind, what) = match logged.as_ref().and_then(|v| v.get("k")).and_then(Value::as_str) {
            Some("c") => (
                "cond_write",
                match logged.as_ref().and_then(|v| v.get("ok")) {
                    Some(Value::Bool(true)) => "applied".to_string(),
                    Some(Value::Bool(false)) => "condition false: not applied".to_string(),
                    _ => "?".to_string(),
                },
            ),
            Some("w") => ("write", "applied".to_string()),
            _ => ("write", "entry collected".to_string()),
        };
        out.push((step, kind.to_string(), format!("{table}/{key}"), what));
    }
    Ok(out)
}

fn target(name: &Value) -> String {
    match name {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string)).collect::<Vec<_>>().join("/")
        }
        other => other.to_string(),
    }
}

fn outcome(v: &Value, max: usize) -> String {
    if let Some(ok) = v.get("ok") {
        format!("ok {}", summary(ok, max))
    } else if let Some(err) = v.get("err") {
        format!("failed: {}", summary(err, max))
    } else {
        summary(v, max)
    }
}

/// Compact JSON, cut at `max` characters.
fn summary(v: &Value, max: usize) -> String {
    truncate(&v.to_string(), max)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn when(ms: Option<u64>, now: u64) -> String {
    match ms {
        None => "-".into(),
        Some(t) if t <= now => format!("{t} ({} ago)", humanize(Duration::from_millis(now - t))),
        Some(t) => format!("{t} (in {})", humanize(Duration::from_millis(t - now))),
    }
}

/// A short human duration: `850ms`, `12.3s`, `4m 5s`, `2h 3m`, `3d 4h`.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3_600 {
        format!("{}m {}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {}m", s / 3_600, s / 60 % 60)
    } else {
        format!("{}d {}h", s / 86_400, s / 3_600 % 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_found_from_their_display_form() {
        let ids = candidates("reservation-0001/6");
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].as_str(), "reservation-0001/6");
        assert_eq!(ids[1], InstanceId::new("reservation-0001").unwrap().child(6));
        let ids = candidates("a/b/3/4");
        assert_eq!(ids.last().unwrap(), &InstanceId::new("a/b").unwrap().child(3).child(4));
        assert_eq!(candidates("plain").len(), 1);
    }
}
