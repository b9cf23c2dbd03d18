//! A stand-in for Docker Hub's auth server (Docker's token protocol), for a
//! `docker-registry` configured with `auth: token`: `GET /token?service=…
//! &scope=…` with basic credentials answers `{"token": <JWT>}`, a JWT
//! signed ES256 with a key whose self-signed certificate is the registry's
//! `rootcertbundle` (the certificate rides in the JWT's `x5c` header).
//! The key and certificate are made with the `openssl` command.
//!
//! ```text
//! <dir>/token-key.pem  token-key.der (PKCS#8)  token-cert.pem
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

pub const SERVICE: &str = "berth-test-registry";
pub const ISSUER: &str = "berth-test-token-issuer";

pub struct TokenServer {
    /// `http://127.0.0.1:<port>/token`.
    pub realm: String,
    /// The certificate the registry must trust.
    pub cert: PathBuf,
    state: Arc<State>,
}

struct State {
    user: String,
    password: String,
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    /// Token requests answered (with a token).
    issued: AtomicUsize,
    /// Every request's scopes, for assertions.
    scopes: Mutex<Vec<String>>,
    stop: AtomicBool,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    /// Starts the server for one user; its files go to `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token-key.pem");
        let der = dir.join("token-key.der");
        let cert = dir.join("token-cert.pem");
        let certder = dir.join("token-cert.der");
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            crate::arg(&key),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            crate::arg(&key),
            "-outform",
            "DER",
            "-out",
            crate::arg(&der),
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            crate::arg(&key),
            "-subj",
            "/CN=berth-test-token",
            "-days",
            "2",
            "-out",
            crate::arg(&cert),
        ]);
        openssl(&[
            "x509",
            "-in",
            crate::arg(&cert),
            "-outform",
            "DER",
            "-out",
            crate::arg(&certder),
        ]);
        let l = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let realm = format!("http://{}/token", l.local_addr().expect("address"));
        let state = Arc::new(State {
            user: user.to_string(),
            password: password.to_string(),
            key_pkcs8: std::fs::read(&der).expect("read key"),
            cert_der: std::fs::read(&certder).expect("read cert"),
            issued: AtomicUsize::new(0),
            scopes: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        l.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        serve(c, &st);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TokenServer { realm, cert, state }
    }

    /// The `auth:` section of the registry's config.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert.display()
        )
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::Relaxed)
    }

    pub fn scopes(&self) -> Vec<String> {
        self.state.scopes.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

fn respond(c: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve(mut c: TcpStream, st: &State) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut scopes = Vec::new();
    let mut service = String::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "scope" => scopes.push(pct_decode(v)),
            "service" => service = pct_decode(v),
            _ => {}
        }
    }
    let auth = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .and_then(|v| v.strip_prefix("Basic ").map(String::from))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    st.scopes.lock().unwrap().extend(scopes.iter().cloned());
    let Some(creds) = auth else {
        respond(
            &mut c,
            "401 Unauthorized",
            r#"{"details":"authentication required"}"#,
        );
        return;
    };
    if creds != format!("{}:{}", st.user, st.password) || service != SERVICE {
        respond(
            &mut c,
            "401 Unauthorized",
            r#"{"details":"incorrect username or password"}"#,
        );
        return;
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut p = s.split(':');
            let typ = p.next()?;
            let rest: Vec<&str> = p.collect();
            let (name, actions) = match rest.as_slice() {
                [name @ .., actions] => (name.join(":"), *actions),
                _ => return None,
            };
            Some(serde_json::json!({
                "type": typ, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = crate::unix_now();
    let header = serde_json::json!({
        "typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&st.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": st.user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", st.issued.load(Ordering::Relaxed)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &st.key_pkcs8,
        &rng,
    )
    .expect("token key");
    let sig = key
        .sign(&rng, signing_input.as_bytes())
        .expect("sign token");
    let jwt = format!("{signing_input}.{}", b64url(sig.as_ref()));
    st.issued.fetch_add(1, Ordering::Relaxed);
    respond(
        &mut c,
        "200 OK",
        &serde_json::json!({"token": jwt, "expires_in": 300}).to_string(),
    );
}
