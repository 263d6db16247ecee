//! `etcd-snapshot trigger SCHEDULE [--wait]`: ask the operator for an on-demand run of a
//! schedule (the `etcdsnapshot.io/requested-at` annotation) and optionally wait for its
//! snapshots to finish.

use super::CliError;
use super::args::TriggerArgs;
use crate::api::{ETCDSnapshotFile, ETCDSnapshotSchedule, Phase};
use crate::consts;
use crate::duration::parse_go;
use crate::naming::request_label;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};

/// Request the run; with `--wait`, print its records when all are Ready or Failed.
pub async fn run(args: TriggerArgs) -> Result<(), CliError> {
    let timeout = parse_go(&args.timeout)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--timeout {:?} is not a duration like 10m",
                args.timeout
            ))
        })?;
    let client = super::common::kube_client().await?;
    let schedules: Api<ETCDSnapshotSchedule> = Api::all(client.clone());
    let value = jiff::Timestamp::now().to_string();
    let patch =
        serde_json::json!({"metadata": {"annotations": {consts::ANNOTATION_REQUESTED_AT: value}}});
    schedules
        .patch(
            &args.schedule,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                CliError::Usage(format!("ETCDSnapshotSchedule {} not found", args.schedule))
            }
            e => CliError::Usage(format!(
                "requesting a run of {}: {}",
                args.schedule,
                super::common::kube_reason(&e)
            )),
        })?;
    println!(
        "Requested a snapshot run of schedule {} ({value}).",
        args.schedule
    );
    if !args.wait {
        return Ok(());
    }
    let files: Api<ETCDSnapshotFile> = Api::all(client);
    let lp = ListParams::default().labels(&format!(
        "{}={}",
        consts::LABEL_REQUEST,
        request_label(&value)
    ));
    let start = Instant::now();
    loop {
        let list = files
            .list(&lp)
            .await
            .map_err(|e| {
                CliError::Usage(format!(
                    "listing snapshot files: {}",
                    super::common::kube_reason(&e)
                ))
            })?
            .items;
        let done = !list.is_empty()
            && list.iter().all(|f| {
                matches!(
                    f.status.as_ref().and_then(|s| s.phase),
                    Some(Phase::Ready | Phase::Failed)
                )
            });
        if done {
            return report(&list);
        }
        if start.elapsed() > timeout {
            return Err(CliError::Failed(timeout_message(
                &args.schedule,
                timeout,
                list.len(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why `--wait` gave up: a run whose records never appeared is still pending in the controller
/// (typically no live agent matches the schedule), which the schedule's events say.
fn timeout_message(schedule: &str, timeout: Duration, records: usize) -> String {
    if records == 0 {
        format!(
            "timed out after {timeout:?}: the operator created no snapshot file for this request yet \
             (it stays pending while no live agent matches the schedule; see `kubectl describe \
             etcdsnapshotschedule {schedule}`)"
        )
    } else {
        format!(
            "timed out after {timeout:?}: {records} snapshot file(s) of the run, not all finished"
        )
    }
}

fn report(list: &[ETCDSnapshotFile]) -> Result<(), CliError> {
    let mut failed = 0;
    println!("NAME\tPHASE\tLOCATION\tSIZE\tMESSAGE");
    for f in list {
        let st = f.status.clone().unwrap_or_default();
        let phase = st.phase.unwrap_or_default();
        if phase == Phase::Failed {
            failed += 1;
        }
        println!(
            "{}\t{:?}\t{}\t{}\t{}",
            f.name_any(),
            phase,
            f.spec.location,
            st.size.map(|q| q.0).unwrap_or_default(),
            st.error.and_then(|e| e.message).unwrap_or_default()
        );
    }
    if failed > 0 {
        Err(CliError::Failed(format!(
            "{failed} of {} snapshot copies failed",
            list.len()
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_without_records_says_the_request_is_pending_and_where_to_look() {
        let m = timeout_message("nightly", Duration::from_secs(300), 0);
        assert!(m.contains("no snapshot file for this request"), "{m}");
        assert!(
            m.contains("kubectl describe etcdsnapshotschedule nightly"),
            "{m}"
        );
        assert!(!m.contains('\n'), "one line: {m}");
        let m = timeout_message("nightly", Duration::from_secs(300), 2);
        assert!(
            m.contains("2 snapshot file(s) of the run, not all finished"),
            "{m}"
        );
    }
}
