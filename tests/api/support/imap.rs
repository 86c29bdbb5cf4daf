//! A private Dovecot IMAP server for integration tests: [`TestImap::start`] writes a config
//! into a temporary folder (maildir there, one passwd-file user with a plain password, no TLS,
//! listening on a free 127.0.0.1 port, logs in `dovecot.log`), runs `dovecot -F -c CONFIG`,
//! waits until the port greets, and kills it on drop. Messages are delivered and read back
//! over IMAP (`APPEND`, `UID FETCH`), as a mail server and a mail client would.
//!
//! Run as root, Dovecot's login and internal processes cannot be root: they run as Debian's
//! `dovenull` and `dovecot` users, and the mail as `dovecot`; run as anyone else, everything
//! runs as that user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::net::TcpStream;

/// The user the test mailbox belongs to.
pub const USER: &str = "bounces";
/// Its password.
pub const PASSWORD: &str = "imap-test-secret";

/// How long Dovecot may take to answer on its port.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running Dovecot, stopped on drop.
pub struct TestImap {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// `dovecot` on PATH (or in /usr/sbin, where Debian puts it); `None` skips the test, unless
/// SANGHA_TEST_REQUIRE_DOVECOT=1, where it fails.
fn dovecot_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("dovecot"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("SANGHA_TEST_REQUIRE_DOVECOT").as_deref() != Ok("1"),
            "SANGHA_TEST_REQUIRE_DOVECOT=1 but dovecot is not installed (apt-get install dovecot-imapd)"
        );
        eprintln!(
            "skipped: dovecot is not installed (apt-get install dovecot-imapd); \
             set SANGHA_TEST_REQUIRE_DOVECOT=1 to make this a failure"
        );
    }
    found
}

fn command_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl TestImap {
    /// Starts Dovecot with an empty INBOX; `None` when it is not installed (see
    /// [`dovecot_binary`]).
    pub async fn start() -> Option<Self> {
        let binary = dovecot_binary()?;
        let dir = tempfile::tempdir().unwrap();
        // Dovecot's own users (when run as root) must reach the passwd file and the mail.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let root = command_output("id", &["-u"]) == "0";
        let (internal_user, internal_group, login_user, mail_owner) = if root {
            let group = "dovecot".to_owned();
            (
                "dovecot".to_owned(),
                group,
                "dovenull".to_owned(),
                "dovecot".to_owned(),
            )
        } else {
            let user = command_output("id", &["-un"]);
            (
                user.clone(),
                command_output("id", &["-gn"]),
                user.clone(),
                user,
            )
        };
        let d = dir.path();
        std::fs::create_dir_all(d.join("mail")).unwrap();
        if root {
            let ok = Command::new("chown")
                .arg(format!("{mail_owner}:{internal_group}"))
                .arg(d.join("mail"))
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the test maildir to {mail_owner}");
        }
        std::fs::write(
            d.join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .unwrap();
        let port = free_port();
        let dirs = |name: &str| d.join(name).display().to_string();
        let config = format!(
            "protocols = imap
listen = 127.0.0.1
base_dir = {base}
state_dir = {state}
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 0
mail_location = maildir:{mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={mail_owner} gid={internal_group} home={mail}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth-worker {{
  user = {internal_user}
}}
service anvil {{
  chroot =
}}
",
            base = dirs("run"),
            state = dirs("state"),
            log = dirs("dovecot.log"),
            mail = dirs("mail"),
            passwd = dirs("passwd"),
        );
        let config_path = d.join("dovecot.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        let server = Self { child, dir, port };
        server.wait_for_greeting().await;
        Some(server)
    }

    /// Dovecot's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The folder holding the config, the mail and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_for_greeting(&self) {
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(tcp) = TcpStream::connect(("127.0.0.1", self.port)).await {
                let mut client = Client::new(tcp);
                if let Ok(Ok(Some(_))) =
                    tokio::time::timeout(Duration::from_secs(5), client.read_response()).await
                {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "dovecot did not answer on 127.0.0.1:{} within {START_DEADLINE:?}; its log:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A logged-in session as [`USER`].
    pub async fn session(&self) -> Session<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let mut client = Client::new(tcp);
        client.read_response().await.unwrap().unwrap();
        client
            .login(USER, PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("login: {e}\n{}", self.log()))
    }

    /// Delivers `raw` into `folder` (created when missing).
    pub async fn append(&self, folder: &str, raw: &[u8]) {
        let mut session = self.session().await;
        let _ = session.create(folder).await;
        session
            .append(folder, None, None, raw)
            .await
            .unwrap_or_else(|e| panic!("APPEND to {folder}: {e}\n{}", self.log()));
        session.logout().await.unwrap();
    }

    /// Every message of `folder` (none when it does not exist), each with its flags, in UID
    /// order; read without setting `\Seen`.
    pub async fn messages(&self, folder: &str) -> Vec<(Vec<u8>, Vec<String>)> {
        let mut session = self.session().await;
        if session.examine(folder).await.is_err() {
            return Vec::new();
        }
        let mut fetches: Vec<_> = session
            .uid_fetch("1:*", "(FLAGS BODY.PEEK[])")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        fetches.sort_by_key(|f| f.uid);
        let messages = fetches
            .iter()
            .map(|f| {
                (
                    f.body().unwrap_or_default().to_vec(),
                    f.flags().map(|flag| format!("{flag:?}")).collect(),
                )
            })
            .collect();
        session.logout().await.unwrap();
        messages
    }
}

impl Drop for TestImap {
    fn drop(&mut self) {
        // The master stops its children when it gets SIGTERM; SIGKILL would leave them.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now, on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
