//! Who may use the console and what they may do.
//!
//! Users and their roles come from a TOML file (to start with; a directory
//! service can replace it behind [`Users`]). Passwords are kept only as
//! PBKDF2-HMAC-SHA256 hashes that carry their own salt and cost. Signing in
//! creates a session: a random token in an `HttpOnly`, `SameSite=Strict`
//! (and, by default, `Secure`) cookie, of which the database keeps only a
//! SHA-256, so sessions work across replicas and signing out ends one at
//! once. A user's role is read from the file on every request, so removing
//! someone or changing their role takes effect without waiting for their
//! session to end. Changes are refused from another origin (the `Origin`
//! header), on top of the strict cookie.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::page::{PageError, bare, esc, url};

const COOKIE: &str = "callflow_console";
/// PBKDF2 rounds of new hashes (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const ROUNDS: u32 = 600_000;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, personal data masked; changes nothing.
    Viewer,
    /// Sees personal data and steers: cancels reminders, handles leads,
    /// retries dead letters.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
}

impl User {
    pub fn can_change(&self) -> bool {
        self.role == Role::Operator
    }

    /// Refuses a change to a viewer.
    pub fn must_change(&self) -> Result<(), PageError> {
        if self.can_change() {
            Ok(())
        } else {
            Err(PageError::forbidden(format!(
                "{} is a viewer: viewers cannot change anything",
                self.name
            )))
        }
    }
}

/// A password hash: `pbkdf2-sha256$<rounds>$<salt>$<hash>` (base64, no padding).
#[derive(Debug, Clone)]
pub struct PasswordHash {
    rounds: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl PasswordHash {
    pub fn new(password: &str, rounds: u32) -> Self {
        let mut salt = vec![0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let hash = derive(password, &salt, rounds);
        Self { rounds, salt, hash }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('$').collect();
        let [scheme, rounds, salt, hash] = parts[..] else {
            return Err("expected pbkdf2-sha256$<rounds>$<salt>$<hash>".into());
        };
        if scheme != "pbkdf2-sha256" {
            return Err(format!("unknown scheme `{scheme}`"));
        }
        let rounds: u32 = rounds
            .parse()
            .map_err(|_| format!("rounds `{rounds}` is not a number"))?;
        if rounds < 1_000 {
            return Err(format!("{rounds} rounds are too few (at least 1000)"));
        }
        let salt = B64.decode(salt).map_err(|e| format!("salt: {e}"))?;
        let hash = B64.decode(hash).map_err(|e| format!("hash: {e}"))?;
        if salt.len() < 8 || hash.len() != 32 {
            return Err("salt of at least 8 bytes and a 32-byte hash expected".into());
        }
        Ok(Self { rounds, salt, hash })
    }

    pub fn verify(&self, password: &str) -> bool {
        let candidate = derive(password, &self.salt, self.rounds);
        kit::api_error::constant_time_eq(&candidate, &self.hash)
    }
}

impl std::fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pbkdf2-sha256${}${}${}",
            self.rounds,
            B64.encode(&self.salt),
            B64.encode(&self.hash)
        )
    }
}

fn derive(password: &str, salt: &[u8], rounds: u32) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, rounds, &mut out);
    out
}

/// Why the users file was refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("users file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    role: Role,
    password_hash: String,
}

struct Account {
    role: Role,
    hash: PasswordHash,
}

/// The people who may sign in.
#[derive(Clone)]
pub struct Users {
    accounts: Arc<HashMap<String, Account>>,
    /// Checked against when the name is unknown, so an unknown name takes
    /// as long to refuse as a wrong password.
    decoy: Arc<PasswordHash>,
}

impl std::fmt::Debug for Users {
    /// Names and roles only: hashes stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.accounts.iter().map(|(name, a)| (name, a.role)))
            .finish()
    }
}

impl Users {
    /// Reads and checks the file; a mistake names the user it is in.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let invalid = |message: String| UsersError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        Self::parse(&text).map_err(invalid)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.user.is_empty() {
            return Err("no [[user]] in it: nobody could sign in".into());
        }
        let mut accounts = HashMap::new();
        let mut rounds = 1_000;
        for (n, entry) in file.user.into_iter().enumerate() {
            let name = entry.name.trim().to_owned();
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err(format!(
                    "user {}: a name of 1 to 100 printable characters",
                    n + 1
                ));
            }
            let hash = PasswordHash::parse(&entry.password_hash)
                .map_err(|e| format!("user `{name}`: password_hash: {e}"))?;
            rounds = rounds.max(hash.rounds);
            if accounts
                .insert(
                    name.clone(),
                    Account {
                        role: entry.role,
                        hash,
                    },
                )
                .is_some()
            {
                return Err(format!("user `{name}` is listed twice"));
            }
        }
        Ok(Self {
            accounts: Arc::new(accounts),
            decoy: Arc::new(PasswordHash::new("decoy", rounds)),
        })
    }

    /// The user if `password` is theirs.
    pub fn check(&self, name: &str, password: &str) -> Option<User> {
        match self.accounts.get(name) {
            Some(account) if account.hash.verify(password) => Some(User {
                name: name.to_owned(),
                role: account.role,
            }),
            Some(_) => None,
            None => {
                self.decoy.verify(password);
                None
            }
        }
    }

    fn current(&self, name: &str) -> Option<User> {
        self.accounts.get(name).map(|a| User {
            name: name.to_owned(),
            role: a.role,
        })
    }
}

/// Failed sign-ins a name may have in [`LOCKOUT`] before it is locked for
/// the rest of it (per replica: enough to make guessing slow).
pub const MAX_FAILURES: u32 = 5;
/// See [`MAX_FAILURES`].
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Failed sign-ins per name, to slow down password guessing.
#[derive(Default)]
pub struct Throttle {
    failures: std::sync::Mutex<HashMap<String, (u32, std::time::Instant)>>,
}

impl Throttle {
    fn locked(&self, name: &str) -> bool {
        let mut failures = self.failures.lock().expect("throttle lock");
        match failures.get(name) {
            Some((_, since)) if since.elapsed() > LOCKOUT => {
                failures.remove(name);
                false
            }
            Some((count, _)) => *count >= MAX_FAILURES,
            None => false,
        }
    }

    fn failed(&self, name: &str) {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() > 10_000 {
            // Guessing many names must not grow memory without end.
            failures.retain(|_, (_, since)| since.elapsed() <= LOCKOUT);
        }
        let entry = failures
            .entry(name.to_owned())
            .or_insert((0, std::time::Instant::now()));
        entry.0 += 1;
    }

    fn succeeded(&self, name: &str) {
        self.failures.lock().expect("throttle lock").remove(name);
    }
}

/// How sessions are kept.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub ttl: Duration,
    pub secure: bool,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(settings: &SessionSettings, value: &str, max_age: u64) -> String {
    let secure = if settings.secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// A change must come from the console's own pages: a browser names the
/// page's origin, which must be this host.
fn same_origin(parts: &Parts) -> bool {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        // Not a browser's cross-site request (browsers send Origin on POST).
        return true;
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| o.split_once("://"));
    matches!((origin, host), (Some((_, o)), Some(h)) if o == h)
}

/// The signed-in user of a request; a page asked for without a session
/// sends the browser to sign in and back.
impl FromRequestParts<crate::State> for User {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::State,
    ) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET && parts.method != Method::HEAD && !same_origin(parts) {
            return Err(
                PageError::forbidden("a change from another site is refused").into_response(),
            );
        }
        let user = match cookie_value(&parts.headers) {
            Some(token) => session_user(state, &token)
                .await
                .map_err(IntoResponse::into_response)?,
            None => None,
        };
        match user {
            Some(user) => Ok(user),
            None if parts.method == Method::GET => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                Err(Redirect::to(&format!("/login?next={}", url(next))).into_response())
            }
            None => Err(PageError::new(
                StatusCode::UNAUTHORIZED,
                "not signed in (or the session ended): sign in again",
            )
            .into_response()),
        }
    }
}

async fn session_user(state: &crate::State, token: &str) -> Result<Option<User>, PageError> {
    let now = kit::events::to_system_time(state.clock.now());
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT username FROM console.sessions WHERE token_hash = $1 AND expires_at > $2",
            &[&token_hash(token), &now],
        )
        .await?;
    Ok(row.and_then(|r| state.users.current(r.get(0))))
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    failed: Option<String>,
}

/// Only a path of this site: never send a signed-in user elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".into(),
    }
}

fn login_form(next: &str, failed: Option<&str>) -> Html<String> {
    let failed = failed
        .map(|f| format!("<p class=\"notice bad\" role=\"alert\">{}</p>", esc(f)))
        .unwrap_or_default();
    bare(
        "Sign in",
        &format!(
            "{failed}<form method=\"post\" action=\"/login\" class=\"stack\">
<input type=\"hidden\" name=\"next\" value=\"{next}\">
<label>Name <input name=\"username\" autocomplete=\"username\" required autofocus></label>
<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>
<button type=\"submit\">Sign in</button></form>",
            next = esc(next)
        ),
    )
}

/// GET /login
pub async fn login_page(Query(query): Query<LoginQuery>) -> Html<String> {
    login_form(&safe_next(query.next.as_deref()), query.failed.as_deref())
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// POST /login
pub async fn login(
    State(state): State<crate::State>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    let name = form.username.trim().to_owned();
    if state.throttle.locked(&name) {
        tracing::warn!(user = %name, "sign-in refused: too many failures");
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &next,
                Some("Too many failed sign-ins for this name: try again in 15 minutes."),
            ),
        )
            .into_response());
    }
    let users = state.users.clone();
    let password = form.password;
    // PBKDF2 is deliberately slow: keep it off the async workers.
    let user = tokio::task::spawn_blocking(move || users.check(&name, &password))
        .await
        .map_err(|e| PageError::upstream("password check", e))?;
    let Some(user) = user else {
        state.throttle.failed(form.username.trim());
        tracing::info!(user = %form.username.trim(), "sign-in refused");
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some("Wrong name or password.")),
        )
            .into_response());
    };
    state.throttle.succeeded(&user.name);
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    let token = hex::encode(token);
    let now = state.clock.now();
    let expires = now + jiff::SignedDuration::try_from(state.sessions.ttl).unwrap_or_default();
    let db = state.pool.get().await?;
    db.execute(
        "INSERT INTO console.sessions (token_hash, username, created_at, expires_at)
         VALUES ($1, $2, $3, $4)",
        &[
            &token_hash(&token),
            &user.name,
            &kit::events::to_system_time(now),
            &kit::events::to_system_time(expires),
        ],
    )
    .await?;
    // Ended sessions are of no use to anyone.
    db.execute(
        "DELETE FROM console.sessions WHERE expires_at < $1",
        &[&kit::events::to_system_time(now)],
    )
    .await?;
    tracing::info!(user = %user.name, role = user.role.as_str(), "signed in");
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (
                header::SET_COOKIE,
                set_cookie(&state.sessions, &token, state.sessions.ttl.as_secs()),
            ),
        ],
    )
        .into_response())
}

/// POST /logout
pub async fn logout(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(token) = cookie_value(&headers) {
        state
            .pool
            .get()
            .await?
            .execute(
                "DELETE FROM console.sessions WHERE token_hash = $1",
                &[&token_hash(&token)],
            )
            .await?;
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_owned()),
            (header::SET_COOKIE, set_cookie(&state.sessions, "", 0)),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = PasswordHash::new("correct horse", 1_000);
        let again = PasswordHash::parse(&hash.to_string()).unwrap();
        assert!(again.verify("correct horse"));
        assert!(!again.verify("correct horse "));
    }

    #[test]
    fn the_users_file_is_checked() {
        let hash = PasswordHash::new("pw", 1_000).to_string();
        let ok =
            format!("[[user]]\nname = \"olga\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\n");
        let users = Users::parse(&ok).unwrap();
        assert_eq!(users.check("olga", "pw").unwrap().role, Role::Operator);
        assert!(users.check("olga", "nope").is_none());
        assert!(users.check("ivan", "pw").is_none());

        let twice = format!("{ok}{ok}");
        assert!(Users::parse(&twice).unwrap_err().contains("listed twice"));
        let bad_role = ok.replace("operator", "admin");
        assert!(Users::parse(&bad_role).is_err());
        let weak = ok.replace("pbkdf2-sha256$1000$", "pbkdf2-sha256$10$");
        assert!(Users::parse(&weak).unwrap_err().contains("too few"));
        assert!(Users::parse("").unwrap_err().contains("nobody"));
    }

    #[test]
    fn guessing_a_password_locks_the_name() {
        let throttle = Throttle::default();
        for _ in 0..MAX_FAILURES {
            assert!(!throttle.locked("olga"));
            throttle.failed("olga");
        }
        assert!(throttle.locked("olga"));
        assert!(!throttle.locked("ivan"), "other names are not affected");
        throttle.succeeded("olga");
        assert!(!throttle.locked("olga"));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            safe_next(Some("/reminders?state=due")),
            "/reminders?state=due"
        );
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
