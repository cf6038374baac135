//! The public JSON shapes of runs, approvals and checkpoints (DESIGN.md's API
//! contract), shared by the CLI's `--json` output and the HTTP API.

use serde_json::{Value, json};

use crate::checkpoint::Checkpoint;
use crate::runs::{Approval, Run};

/// RFC 3339 UTC time of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn run(r: &Run) -> Value {
    json!({
        "id": r.id,
        "status": r.status.as_str(),
        "graph": r.graph,
        "thread_id": r.thread_id,
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "usage": r.usage,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
    })
}

pub fn approval(a: &Approval) -> Value {
    json!({
        "id": a.id,
        "run_id": a.run_id,
        "thread_id": a.thread_id,
        "node": a.node,
        "payload": a.payload,
        "actions": a.actions,
        "status": a.status.as_str(),
        "decision": a.decision,
        "created_at": rfc3339(a.created_at),
        "decided_at": a.decided_at.map(rfc3339),
        "expires_at": a.expires_at.map(rfc3339),
    })
}

pub fn checkpoint(c: &Checkpoint) -> Value {
    json!({
        "thread_id": c.thread_id,
        "checkpoint_id": c.id,
        "parent_id": c.parent_id,
        "step": c.step,
        "source": c.source,
        "values": c.values,
        "versions": c.versions,
        "next": c.next.iter().map(|t| t.node.clone()).collect::<Vec<_>>(),
        "metadata": c.metadata,
        "created_at": rfc3339(c.created_at),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_795_615_857_645), "2026-11-25T14:10:57.645Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
