//! `sangha subscribers course pause|resume`, and the course lines of `subscribers show`.

use std::io::Write;

use crate::app::Runtime;
use crate::courses::{Courses, PauseOutcome, ResumeOutcome, local_time_text};
use crate::domain::OfferingKind;
use crate::store::SubscriberDetail;

use super::CourseCommand;

/// Pauses or resumes someone's course, as they can from their preferences page.
pub async fn run(
    runtime: &Runtime,
    command: CourseCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (email, slug, pause) = match command {
        CourseCommand::Pause { email, offering } => (email, offering, true),
        CourseCommand::Resume { email, offering } => (email, offering, false),
    };
    let offering = super::offering(runtime, &slug).await?;
    anyhow::ensure!(
        offering.kind == OfferingKind::Course,
        "--offering: `{slug}` is a newsletter, not a course"
    );
    let who = super::subscribers::find(runtime, &email).await?;
    let courses = &runtime.courses;
    let (store, id, now) = (&runtime.store, who.subscriber.id, runtime.clock.now_ms());
    let not_started = || {
        anyhow::anyhow!(
            "{email} has not started {slug}: they are not confirmed for it (a course starts \
             within a minute of the confirmation)"
        )
    };
    if pause {
        match courses.pause(store, id, offering.id, now).await? {
            PauseOutcome::Paused => writeln!(
                out,
                "{email}: {slug} paused; `sangha subscribers course resume {email} --offering \
                 {slug}` continues it at the next lesson"
            )?,
            PauseOutcome::NotStarted => return Err(not_started()),
            PauseOutcome::NotActive(state) => {
                anyhow::bail!("{email}: {slug} is {state}, so it cannot be paused")
            }
        }
    } else {
        match courses.resume(store, id, offering.id, now).await? {
            ResumeOutcome::Resumed(Some((day, at))) => {
                let zone = who.subscriber.timezone.as_deref();
                writeln!(
                    out,
                    "{email}: {slug} resumed; next: day {day} on {} {}",
                    local_time_text(at, &courses.zone(zone)),
                    courses.zone_name(zone)
                )?
            }
            ResumeOutcome::Resumed(None) => {
                writeln!(out, "{email}: {slug} resumed; no lesson is left: finished")?
            }
            ResumeOutcome::NotStarted => return Err(not_started()),
            ResumeOutcome::NotPaused(state) => {
                anyhow::bail!("{email}: {slug} is {state}, not paused")
            }
        }
    }
    Ok(())
}

/// Where the person is in each course, one line each.
pub fn print_progress(
    courses: &Courses,
    detail: &SubscriberDetail,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if detail.courses.is_empty() {
        return Ok(());
    }
    writeln!(out, "courses:")?;
    for c in &detail.courses {
        let line = courses.describe(c, detail.subscriber.timezone.as_deref());
        writeln!(out, "  {:<24} {line}", c.offering)?;
    }
    Ok(())
}
