//! A course's lessons folder, read and checked, and the lessons stored from it.
//!
//! Every `*.md` file of the folder (but `README.md`) is a lesson, with `day: N` in its front
//! matter; two files for one day are refused. The folder is read again when a file is added,
//! changed or removed. A changed file is stored as a new version used from then on (a lesson
//! already queued keeps the words it was queued with); a removed file withdraws its lesson. A
//! folder with any bad file changes nothing: the error is logged, naming the file and line,
//! and the lessons stored before stay in use.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::content::Content;
use crate::store::{NewLesson, Store, StoredLesson};

/// The last day a lesson may have: ten years is longer than any course.
pub const MAX_LESSON_DAY: u32 = 3650;

/// A lesson file as read and checked.
#[derive(Debug, Clone)]
pub struct LessonFile {
    day: i64,
    content: Content,
    hash: String,
}

/// What a lessons folder looked like when it was last read: file names, sizes and times.
pub type Fingerprint = Result<Vec<(String, u64, u128)>, String>;

/// The stored lessons of a course with one per day (the newest, should two processes have
/// raced).
pub async fn current(store: &Store, offering_id: i64) -> Result<Vec<StoredLesson>, sqlx::Error> {
    let mut lessons = store.current_lessons(offering_id).await?;
    lessons.sort_by_key(|l| (l.day, std::cmp::Reverse(l.send_id)));
    lessons.dedup_by_key(|l| l.day);
    Ok(lessons)
}

/// Stores the new and changed lessons of `files` and withdraws the stored ones whose file is
/// gone.
pub async fn store_changes(
    store: &Store,
    slug: &str,
    offering_id: i64,
    files: &[LessonFile],
    now: Millis,
) -> anyhow::Result<()> {
    let stored = current(store, offering_id).await?;
    for file in files {
        let before = stored.iter().find(|s| s.day == file.day);
        if before.is_some_and(|s| s.hash == file.hash) {
            continue;
        }
        let lesson = NewLesson {
            offering_id,
            day: file.day,
            subject: file.content.subject.clone(),
            preheader: file.content.preheader.clone(),
            html_template: file.content.html.clone(),
            text_template: file.content.text.clone(),
            source_path: file.content.source.display().to_string(),
            hash: file.hash.clone(),
        };
        let id = store
            .store_lesson(&lesson, before.map(|s| s.send_id), now)
            .await?;
        if let Some(id) = id {
            tracing::info!(course = %slug, day = file.day, send = id,
                file = %file.content.source.display(),
                "{}", if before.is_some() { "lesson changed: new version stored" } else { "lesson stored" });
        }
    }
    for gone in stored
        .iter()
        .filter(|s| !files.iter().any(|f| f.day == s.day))
    {
        store.withdraw_lesson(gone.send_id, now).await?;
        tracing::warn!(course = %slug, day = gone.day, send = gone.send_id,
            "lesson file removed: lesson withdrawn");
    }
    Ok(())
}

fn is_lesson_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !lower.starts_with('.')
        && lower != "readme.md"
        && (lower.ends_with(".md") || lower.ends_with(".markdown"))
}

fn lesson_paths(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read the lessons folder: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_lesson_file(&n.to_string_lossy()))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// The names, sizes and modification times of the lesson files of `dir`.
pub fn fingerprint(dir: &Path) -> Fingerprint {
    lesson_paths(dir).map(|paths| {
        paths
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(p).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                (p.display().to_string(), len, modified)
            })
            .collect()
    })
}

/// Reads and checks every lesson of a folder; all errors at once, each naming its file.
pub fn load(dir: &Path, slug: &str) -> Result<Vec<LessonFile>, Vec<String>> {
    let paths = lesson_paths(dir).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut lessons: Vec<LessonFile> = Vec::new();
    for path in &paths {
        let content = match crate::content::load(path) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let Some(day) = content.day else {
            errors.push(format!(
                "{}: a lesson needs `day: N` in its front matter (day 0 is the welcome)",
                path.display()
            ));
            continue;
        };
        if day > MAX_LESSON_DAY {
            errors.push(format!(
                "{}: day {day} is too far: lessons go up to day {MAX_LESSON_DAY}",
                path.display()
            ));
            continue;
        }
        if let Some(other) = content.offering.as_deref().filter(|o| *o != slug) {
            errors.push(format!(
                "{}: the front matter says offering `{other}`, but the file is a lesson of `{slug}`",
                path.display()
            ));
            continue;
        }
        let day = i64::from(day);
        if let Some(twin) = lessons.iter().find(|l| l.day == day) {
            errors.push(format!(
                "{}: day {day} is already the day of {}",
                path.display(),
                twin.content.source.display()
            ));
            continue;
        }
        let mut hasher = Sha256::new();
        for part in [
            content.subject.as_str(),
            content.preheader.as_deref().unwrap_or(""),
            content.html.as_str(),
            content.text.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let hash = crate::domain::hex(&hasher.finalize());
        lessons.push(LessonFile { day, content, hash });
    }
    if errors.is_empty() && lessons.is_empty() {
        errors.push(format!(
            "{}: no lessons (Markdown files with `day: N` in the front matter)",
            dir.display()
        ));
    }
    if errors.is_empty() {
        lessons.sort_by_key(|l| l.day);
        Ok(lessons)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_course_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("courses/orgasmic-queen");
        let lessons = load(&dir, "orgasmic-queen").expect("the example lessons load");
        let days: Vec<i64> = lessons.iter().map(|l| l.day).collect();
        assert_eq!(days[0], 0, "a welcome on day 0");
        assert!(days.len() >= 3, "{days:?}");
    }

    #[test]
    fn a_lesson_without_a_day_or_a_second_lesson_for_a_day_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, front: &str| {
            std::fs::write(
                dir.path().join(name),
                format!("---\nsubject: Hi\n{front}---\nBreathe, {{{{name}}}}.\n"),
            )
            .unwrap();
        };
        write("a.md", "day: 1\n");
        write("README.md", "");
        assert_eq!(load(dir.path(), "c").unwrap().len(), 1);
        write("b.md", "");
        write("c.md", "day: 1\n");
        let errors = load(dir.path(), "c").unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("b.md") && errors[0].contains("day: N"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("c.md") && errors[1].contains("a.md"),
            "{errors:?}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(load(empty.path(), "c").unwrap_err()[0].contains("no lessons"));
    }
}
