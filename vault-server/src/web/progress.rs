//! Disposals that outlive their request. The confirmation of a disposal
//! starts the batch (`Vault::dispose`, as over the API) on a blocking task
//! and answers 303 to `/ui/disposals/progress/{job}`, a page that reloads
//! itself every two seconds (the `Refresh` header: no script) until the
//! batch has its certificate or the core's error.
//!
//! - A job ID is 128 random bits, and a job is bound to the user who
//!   started it: anyone else (another user, or no session) gets the same
//!   "no such disposal" answer as for an ID that never existed.
//! - At most one running job per user, and at most [`MAX_JOBS`] kept; an
//!   ended job is kept [`KEEP`] for its page, then forgotten. The vault
//!   runs one batch at a time anyway (its disposal lock); this bounds what
//!   waits and what is remembered.
//! - The page shows only IDs, counts, times and the batch's step (from
//!   `Vault::disposals`, the batch row the core writes at each step): no
//!   personal information.
//! - A job lives in server memory, but its batch lives in the vault: once
//!   the batch is recorded, the job's page links to the batch's own page,
//!   `/ui/disposals/batch/{disposal}`, which is built from the batch row
//!   and the certificate alone and so survives a restart of the server
//!   (the core resumes the batch when the vault is opened again). A job
//!   page the server no longer knows lists the person's recent batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use vault_core::access::Role;
use vault_core::clock::format_ms;
use vault_core::ids::{DisposalId, RecordId, UserId};
use vault_core::vault::{DISPOSAL_STEPS, DisposalOutcome, DisposalSummary};

use super::{Signed, esc, page, see_other, visitor};
use crate::problem::ApiError;
use crate::{App, RequestContext};

/// The most jobs remembered at once (running and ended).
pub(crate) const MAX_JOBS: usize = 256;

/// How long an ended job's page stays available.
pub(crate) const KEEP: Duration = Duration::from_secs(3600);

/// How often the running page reloads itself, seconds.
const REFRESH_S: u32 = 2;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/disposals/progress/{job}", get(progress))
        .route("/ui/disposals/batch/{disposal}", get(batch))
}

/// Where a job stands.
#[derive(Clone, Debug)]
pub(crate) enum JobState {
    /// Waiting for its turn or running.
    Running,
    /// The batch ended with its certificate (or found nothing in scope).
    Done(Box<DisposalOutcome>),
    /// The core refused or the batch failed: its status and message.
    Failed(StatusCode, String),
}

/// One disposal started from the page.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// Who started it: the only user who may see it.
    pub(crate) user: UserId,
    /// Wall-clock start, unix ms.
    pub(crate) started_ms: i64,
    started: Instant,
    ended: Option<Instant>,
    pub(crate) state: JobState,
}

impl Job {
    /// Seconds since the start (to the end, once ended).
    pub(crate) fn elapsed_s(&self) -> u64 {
        self.ended
            .unwrap_or_else(Instant::now)
            .duration_since(self.started)
            .as_secs()
    }
}

/// Why a job was not started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The user has one running: its ID.
    Busy(String),
    /// [`MAX_JOBS`] are running.
    Full,
}

/// The server's disposal jobs (one registry per [`App`]).
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
}

impl Jobs {
    /// Registers a running job for `user`, unless they have one running or
    /// the registry is full of running jobs. Ended jobs past [`KEEP`] are
    /// forgotten first, then (when still full) the oldest ended ones.
    pub(crate) fn start(&self, user: UserId, now_ms: i64) -> Result<String, Refused> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some((id, _)) = jobs
            .iter()
            .find(|(_, j)| j.user == user && matches!(j.state, JobState::Running))
        {
            return Err(Refused::Busy(id.clone()));
        }
        jobs.retain(|_, j| j.ended.is_none_or(|e| e.elapsed() < KEEP));
        while jobs.len() >= MAX_JOBS {
            let oldest = jobs
                .iter()
                .filter_map(|(id, j)| j.ended.map(|e| (e, id.clone())))
                .min();
            match oldest {
                Some((_, id)) => {
                    jobs.remove(&id);
                }
                None => return Err(Refused::Full),
            }
        }
        let mut raw = [0u8; 16];
        vault_core::crypto::fill_random(&mut raw);
        let id = hex::encode(raw);
        jobs.insert(
            id.clone(),
            Job {
                user,
                started_ms: now_ms,
                started: Instant::now(),
                ended: None,
                state: JobState::Running,
            },
        );
        Ok(id)
    }

    /// Records how a job ended.
    pub(crate) fn finish(&self, id: &str, r: Result<DisposalOutcome, ApiError>) {
        if let Some(j) = self.jobs.lock().expect("jobs lock").get_mut(id) {
            j.ended = Some(Instant::now());
            j.state = match r {
                Ok(o) => JobState::Done(Box::new(o)),
                Err(e) => JobState::Failed(e.status, e.detail),
            };
        }
    }

    /// The job, if it exists and is `user`'s.
    pub(crate) fn get(&self, id: &str, user: UserId) -> Option<Job> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .get(id)
            .filter(|j| j.user == user)
            .cloned()
    }
}

/// Starts a confirmed disposal as a job of `who` and answers 303 to its
/// progress page; or a page saying why not (their own job still running,
/// with its link; the server full).
pub(super) fn start(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    op: impl FnOnce(
        &vault_core::Vault,
        &vault_core::vault::Session,
    ) -> vault_core::Result<DisposalOutcome>
    + Send
    + 'static,
) -> Response {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let id = match app.web_jobs.start(who.user_id, now_ms) {
        Ok(id) => id,
        Err(Refused::Busy(id)) => {
            return page(
                StatusCode::CONFLICT,
                "Dispose",
                Some(who),
                &format!(
                    "<p role=\"alert\" class=\"error\">A disposal you started is still running. \
                     <a href=\"/ui/disposals/progress/{}\">Follow it</a>, and start the next one when it has ended.</p>",
                    esc(&id)
                ),
            );
        }
        Err(Refused::Full) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Dispose",
                Some(who),
                "<p role=\"alert\" class=\"error\">Too many disposals are running. Wait a few minutes, then preview and confirm again.</p>",
            );
        }
    };
    let (app2, rc2, bearer, job) = (app.clone(), rc.clone(), who.bearer(), id.clone());
    tokio::spawn(async move {
        let r = app2.as_user_long(&rc2, bearer, op).await;
        app2.web_jobs.finish(&job, r);
    });
    see_other(&format!("/ui/disposals/progress/{id}"), None)
}

#[derive(Deserialize)]
struct ProgressQuery {
    /// `off`: do not reload by itself (WCAG 2.2.2: the reader stops it).
    #[serde(default)]
    refresh: String,
}

/// A step's name for a person.
fn step_label(step: &str) -> &'static str {
    match step {
        "intent" => "the batch is recorded; destroying the keys",
        "keys_deleted" => "the record keys are destroyed; re-keying the buckets",
        "buckets_rotated" => "the buckets are re-keyed; moving to a new key epoch",
        "epoch_ratcheted" => "a new key epoch is in force; purging the key store",
        "keystore_purged" => "the key store is purged; deleting the ciphertexts",
        "ciphertexts_deleted" => "the ciphertexts are deleted; verifying the destruction",
        "verified" => "the destruction is verified; signing the certificate",
        "complete" => "complete",
        _ => "in progress",
    }
}

async fn progress(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ProgressQuery>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let Some(job) = app.web_jobs.get(&id, who.user_id) else {
        // The same answer for another user's job and for none at all; the
        // person's own batches of the last day, which the vault keeps.
        let me = who.user_id;
        let since = jiff::Timestamp::now().as_millisecond() - 86_400_000;
        // Only someone who may dispose has batches; asking for another's
        // would be audited as a denial they never attempted.
        let may_dispose = who.may(vault_core::access::Permission::Dispose);
        let mine = app
            .as_user(&rc, who.bearer(), move |v, s| {
                if !may_dispose {
                    return Ok(Vec::new());
                }
                Ok(v.disposals(s)?
                    .into_iter()
                    .filter(|d| d.operator == me && d.created_ms >= since)
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default();
        let list = if mine.is_empty() {
            String::new()
        } else {
            let items: String = mine
                .iter()
                .rev()
                .map(|d| {
                    format!(
                        "<li><a href=\"/ui/disposals/batch/{0}\">Disposal {0}</a>: {1} record(s), started {2}, {3}</li>",
                        esc(&d.id.to_string()),
                        d.records,
                        esc(&format_ms(d.created_ms)),
                        if d.failed.is_some() { "failed" } else if d.step == "complete" { "done" } else { "running" }
                    )
                })
                .collect();
            format!("<h2>Your disposals of the last day</h2><ul id=\"recent\">{items}</ul>")
        };
        return page(
            StatusCode::NOT_FOUND,
            "Disposal progress",
            Some(&who),
            &format!(
                "<p role=\"alert\" class=\"error\">There is no disposal of yours with this address: \
                 it was started by someone else, ended over an hour ago, or the server was restarted since. \
                 A disposal whose batch had started goes on (the vault resumes it) and has its own page below.</p>{list}"
            ),
        );
    };
    let href = format!("/ui/disposals/progress/{}", esc(&id));
    let started = format!(
        "<dt>Started</dt><dd>{}</dd><dt>Time taken</dt><dd id=\"elapsed\">{} s</dd>",
        esc(&format_ms(job.started_ms)),
        job.elapsed_s()
    );
    match &job.state {
        JobState::Running => {
            // The batch row the core keeps (its step, its size), once the
            // batch has one: this user's, started since the job.
            let since = job.started_ms - 1_000;
            let me = who.user_id;
            let batch = app
                .as_user(&rc, who.bearer(), move |v, s| {
                    Ok(v.disposals(s)?.into_iter().rev().find(|d| {
                        d.operator == me && d.created_ms >= since && d.step != "complete"
                    }))
                })
                .await
                .ok()
                .flatten();
            let step = match &batch {
                Some(b) => format!(
                    "<dt>Batch</dt><dd><a id=\"batch-page\" href=\"/ui/disposals/batch/{0}\"><code>{0}</code></a> \
                     (its own page, kept by the vault: it survives a restart of the server)</dd>{1}",
                    esc(&b.id.to_string()),
                    records_and_step(b)
                ),
                None => "<dt>Step</dt><dd id=\"step\">planning: checking the scope and the legal holds</dd>"
                    .into(),
            };
            let auto = q.refresh != "off";
            let control = if auto {
                format!(
                    "<p class=\"hint\">This page reloads itself every {REFRESH_S} seconds until the disposal ends. \
                     <a href=\"{href}?refresh=off\">Stop reloading</a></p>"
                )
            } else {
                format!(
                    "<p class=\"hint\">Automatic reloading is off. <a href=\"{href}?refresh=off\">Check now</a> · \
                     <a href=\"{href}\">Reload every {REFRESH_S} seconds</a></p>"
                )
            };
            let mut r = page(
                StatusCode::OK,
                "Disposal in progress",
                Some(&who),
                &format!(
                    "<p role=\"status\" id=\"state\">Running. Leave this page open or come back to it: the disposal goes on either way.</p>\
                     {control}<dl>{started}{step}</dl>"
                ),
            );
            if auto {
                reloads_itself(&mut r);
            }
            r
        }
        JobState::Done(o) => done(&who, o, &started),
        JobState::Failed(status, detail) => page(
            *status,
            "Disposal not done",
            Some(&who),
            &format!(
                "<p role=\"alert\" class=\"error\" id=\"state\">Not done: {}</p><dl>{started}</dl>\
                 <p>Check the scope and the holds, then <a href=\"/ui/disposals\">preview it again</a>. \
                 A batch that failed part-way is finished with <code>pivault disposal retry ID</code>.</p>",
                esc(detail)
            ),
        ),
    }
}

/// The end of a disposal: the counts, the batch, the certificate and what
/// to do with it (a contractor co-signs it).
fn done(who: &Signed, o: &DisposalOutcome, started: &str) -> Response {
    let counts = format!(
        "<dl><dt>Records</dt><dd id=\"count-records\">{}</dd><dt>Customers</dt><dd id=\"count-subjects\">{}</dd>\
         <dt>Massachusetts residents among them</dt><dd id=\"count-ma-residents\">{}</dd>\
         <dt>Left out (held)</dt><dd id=\"count-excluded\">{}</dd>{started}</dl>",
        o.records.len(),
        o.subjects,
        super::officer::residents(o),
        o.excluded.len()
    );
    let Some(cert) = o.certificate_id else {
        return page(
            StatusCode::OK,
            "Disposal done",
            Some(who),
            &format!(
                "<p role=\"status\" id=\"state\">Nothing was in scope any more, so nothing was disposed of and no certificate was issued.</p>{counts}"
            ),
        );
    };
    let cosign = if who.role == Role::Contractor {
        format!(
            "<li><a href=\"/ui/cosign/{cert}\">Co-sign the certificate with your key</a> (offline: the key stays on your machine)</li>"
        )
    } else {
        String::new()
    };
    page(
        StatusCode::OK,
        "Disposal done",
        Some(who),
        &format!(
            "<p role=\"status\" id=\"state\">Done: the keys are destroyed, the ciphertexts deleted and the destruction verified; the certificate is signed.</p>\
             {counts}{excl}<dl><dt>Disposal</dt><dd><code>{disposal}</code></dd><dt>Certificate</dt><dd><code id=\"certificate-id\">{cert}</code></dd>\
             <dt>Epoch</dt><dd>{epochs}</dd></dl>\
             <ul>{cosign}<li><a href=\"/ui/certificates/{cert}/pdf\" download>Download the certificate as a PDF</a></li>\
             <li><a href=\"/ui/disposals/certificate/{cert}\" download>Download the certificate (signed JSON)</a></li>\
             <li><a href=\"/ui/verify\">Verify a certificate</a></li><li><a href=\"/ui/disposals\">Another disposal</a></li>\
             <li><a id=\"batch-page\" href=\"/ui/disposals/batch/{disposal}\">This disposal&#39;s own page</a> (kept by the vault: bookmark it)</li></ul>",
            excl = super::officer::exclusions(o),
            disposal = o.disposal_id.map(|d| d.to_string()).unwrap_or_default(),
            epochs = o
                .epochs
                .map(|(a, b)| format!("{a} → {b}"))
                .unwrap_or_default(),
        ),
    )
}

/// A batch's own page, built from what the vault keeps (the batch row,
/// then the certificate): it works after a restart of the server, when the
/// job that started the batch is forgotten. Only the person who ran the
/// batch sees it; anyone else gets the answer of a batch that never was.
async fn batch(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let me = who.user_id;
    let found = match id.parse::<DisposalId>() {
        Ok(_) if !who.may(vault_core::access::Permission::Dispose) => None,
        Ok(did) => app
            .as_user(&rc, who.bearer(), move |v, s| {
                let Some(d) = v
                    .disposals(s)?
                    .into_iter()
                    .find(|d| d.id == did && d.operator == me)
                else {
                    return Ok(None);
                };
                let cert = if d.step == "complete" {
                    Some(v.certificate(s, d.certificate_id)?)
                } else {
                    None
                };
                Ok(Some((d, cert)))
            })
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    let Some((d, cert)) = found else {
        return page(
            StatusCode::NOT_FOUND,
            "Disposal",
            Some(&who),
            "<p role=\"alert\" class=\"error\">There is no disposal of yours with this address.</p>",
        );
    };
    let href = format!("/ui/disposals/batch/{}", esc(&d.id.to_string()));
    let started = format!("<dt>Started</dt><dd>{}</dd>", esc(&format_ms(d.created_ms)));
    if let Some(c) = cert {
        return done(&who, &outcome_of(&d, &c.body), &started);
    }
    if let Some(why) = &d.failed {
        return page(
            StatusCode::OK,
            "Disposal not done",
            Some(&who),
            &format!(
                "<p role=\"alert\" class=\"error\" id=\"state\">The batch failed at the step \"{}\": {}</p><dl>{started}</dl>\
                 <p>No certificate was issued. Once the cause is fixed, an officer finishes it with <code>pivault disposal retry {}</code>.</p>",
                esc(step_label(&d.step)),
                esc(why),
                esc(&d.id.to_string())
            ),
        );
    }
    let mut r = page(
        StatusCode::OK,
        "Disposal in progress",
        Some(&who),
        &format!(
            "<p role=\"status\" id=\"state\">Running. The disposal goes on whether this page is open or not, and after a restart of the server.</p>\
             <p class=\"hint\">This page reloads itself every {REFRESH_S} seconds. <a href=\"{href}\">Check now</a></p>\
             <dl>{started}{}</dl>",
            records_and_step(&d)
        ),
    );
    reloads_itself(&mut r);
    r
}

/// A running batch's size and step, as its job's page and its own page show them.
fn records_and_step(b: &DisposalSummary) -> String {
    let n = DISPOSAL_STEPS
        .iter()
        .position(|s| *s == b.step)
        .map_or(1, |i| i + 1);
    format!(
        "<dt>Records</dt><dd>{}</dd><dt>Step</dt><dd id=\"step\">{n} of {}: {}</dd>",
        b.records,
        DISPOSAL_STEPS.len(),
        esc(step_label(&b.step))
    )
}

/// The `Refresh` header, which `<meta http-equiv>` stands in for: the page
/// reloads itself with no script, and the reader has a link to stop it.
fn reloads_itself(r: &mut Response) {
    r.headers_mut().insert(
        axum::http::header::HeaderName::from_static("refresh"),
        HeaderValue::from(REFRESH_S),
    );
}

/// The outcome of a completed batch, read back from its certificate (the
/// counts it signs), for the page of a batch whose job is forgotten.
fn outcome_of(d: &DisposalSummary, body: &serde_json::Value) -> DisposalOutcome {
    let ids = |v: &serde_json::Value| -> Option<RecordId> { v["record_id"].as_str()?.parse().ok() };
    let list = |path: &str| {
        body.pointer(path)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let count = |path: &str| body.pointer(path).and_then(serde_json::Value::as_u64);
    DisposalOutcome {
        disposal_id: Some(d.id),
        certificate_id: Some(d.certificate_id),
        records: list("/sanitization/details/keys_destroyed")
            .iter()
            .filter_map(ids)
            .collect(),
        subjects: count("/target/subject_count").unwrap_or(0),
        ma_residents: count("/target/ma_resident_count"),
        excluded: list("/sanitization/exclusions")
            .iter()
            .filter_map(|e| Some((ids(e)?, e["reason"].as_str()?.to_owned())))
            .collect(),
        epochs: count("/sanitization/details/epoch_before")
            .zip(count("/sanitization/details/epoch_after")),
        duration_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> DisposalOutcome {
        DisposalOutcome {
            disposal_id: None,
            certificate_id: None,
            records: vec![],
            subjects: 0,
            ma_residents: None,
            excluded: vec![],
            epochs: None,
            duration_ms: 0,
        }
    }

    #[test]
    fn one_running_job_per_user_bound_to_that_user() {
        let jobs = Jobs::default();
        let (ann, bob) = (UserId::new(), UserId::new());
        let a = jobs.start(ann, 1).expect("first");
        assert_eq!(a.len(), 32, "128 random bits, hex");
        assert_eq!(jobs.start(ann, 2), Err(Refused::Busy(a.clone())));
        let b = jobs.start(bob, 3).expect("another user's");
        assert_ne!(a, b);
        // Each sees their own, never the other's.
        assert!(jobs.get(&a, ann).is_some());
        assert!(jobs.get(&a, bob).is_none());
        assert!(jobs.get(&b, ann).is_none());
        assert!(jobs.get("00", ann).is_none());
        jobs.finish(&a, Ok(outcome()));
        assert!(matches!(
            jobs.get(&a, ann).unwrap().state,
            JobState::Done(_)
        ));
        // Ended: the next one may start.
        let a2 = jobs.start(ann, 4).expect("after the first ended");
        jobs.finish(&a2, Err(ApiError::invalid("nothing")));
        assert!(matches!(
            jobs.get(&a2, ann).unwrap().state,
            JobState::Failed(StatusCode::BAD_REQUEST, _)
        ));
    }

    #[test]
    fn the_registry_is_bounded_forgetting_ended_jobs_first() {
        let jobs = Jobs::default();
        let first = jobs.start(UserId::new(), 0).unwrap();
        jobs.finish(&first, Ok(outcome()));
        let running: Vec<String> = (1..MAX_JOBS)
            .map(|i| jobs.start(UserId::new(), i as i64).unwrap())
            .collect();
        // Full: the ended job makes room, then nothing does.
        let last = jobs
            .start(UserId::new(), 0)
            .expect("room from the ended job");
        assert!(jobs.jobs.lock().unwrap().get(&first).is_none());
        assert_eq!(jobs.start(UserId::new(), 0), Err(Refused::Full));
        jobs.finish(&running[0], Ok(outcome()));
        assert!(jobs.start(UserId::new(), 0).is_ok());
        assert!(jobs.jobs.lock().unwrap().contains_key(&last));
        assert_eq!(jobs.jobs.lock().unwrap().len(), MAX_JOBS);
    }
}
