//! The recipes in deploy/ work: every `wsloop serve …` command in them
//! (Procfile, render.yaml's startCommand, the systemd unit's ExecStart,
//! the commands in the comments of nginx.conf and the Caddyfile) passes
//! `--check` with the environment the recipe gives it; the systemd unit
//! passes `systemd-analyze verify`, nginx.conf `nginx -t` and the
//! Caddyfile `caddy validate`, each where the tool is installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Environment variables, in order.
type Env = Vec<(String, String)>;

/// One `wsloop serve` command found in a recipe.
#[derive(Debug)]
struct Recipe {
    file: &'static str,
    line: usize,
    args: Vec<String>,
    env: Env,
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(file))
        .unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// Splits a command line on white space, shell style for what recipes
/// use: `VAR=value` words before the command are its environment.
fn command_at(text: &str) -> Option<(Env, Vec<String>)> {
    let at = text.find("wsloop serve")?;
    // The program may be a path (./target/release/wsloop): start at its
    // word.
    let start = text[..at].rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let mut env = Vec::new();
    for word in text[..start].split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                env.push((k.to_owned(), v.to_owned()))
            }
            _ => env.clear(),
        }
    }
    let words: Vec<String> = text[start..].split_whitespace().map(String::from).collect();
    // The program, then `serve`, then the options.
    Some((env, words[2..].to_vec()))
}

/// Every `wsloop serve` line of `file`, with `env` added to each.
fn commands(file: &'static str, env: &[(String, String)]) -> Vec<Recipe> {
    read(file)
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (mut e, args) = command_at(l)?;
            e.extend(env.iter().cloned());
            Some(Recipe {
                file,
                line: i + 1,
                args,
                env: e,
            })
        })
        .collect()
}

/// `key: value` pairs of render.yaml's envVars (a generated or linked
/// value gets a stand-in of the right form).
fn render_env() -> Env {
    let text = read("render.yaml");
    let mut env = Vec::new();
    let mut key: Option<String> = None;
    for l in text.lines().map(str::trim) {
        if let Some(k) = l.strip_prefix("- key:") {
            key = Some(k.trim().to_owned());
        } else if let (Some(k), Some(v)) = (&key, l.strip_prefix("value:")) {
            env.push((k.clone(), v.trim().trim_matches('"').to_owned()));
            key = None;
        } else if let (Some(k), true) = (&key, l.starts_with("generateValue:")) {
            env.push((k.clone(), "generated0by0render0abcdef".to_owned()));
            key = None;
        } else if let (Some(k), true) = (&key, l.starts_with("fromService:")) {
            if k == "REDIS_URL" {
                env.push((k.clone(), "redis://red-abc123:6379".to_owned()));
            }
            key = None;
        }
    }
    env.push(("PORT".into(), "10000".into()));
    env
}

/// `Environment=` lines of the systemd unit.
fn unit_env() -> Env {
    read("wsloop.service")
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn run_check(r: &Recipe) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.arg("serve").args(&r.args).arg("--check");
    // Only what the recipe says.
    for (k, _) in std::env::vars() {
        if k.starts_with("WSLOOP_") || k == "PORT" || k == "REDIS_URL" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .envs(r.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run wsloop serve --check");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_serve_command_in_the_recipes_passes_check() {
    let heroku = vec![
        ("PORT".to_owned(), "31337".to_owned()),
        (
            "REDIS_URL".to_owned(),
            "rediss://:p4ssw0rd@ec2-1-2-3-4.compute-1.amazonaws.com:6380".to_owned(),
        ),
    ];
    let mut all = Vec::new();
    for (file, env) in [
        ("Procfile", heroku),
        ("render.yaml", render_env()),
        ("wsloop.service", unit_env()),
        ("nginx.conf", Vec::new()),
        ("Caddyfile", Vec::new()),
    ] {
        let found = commands(file, &env);
        assert!(
            !found.is_empty(),
            "no `wsloop serve` command in deploy/{file}"
        );
        all.extend(found);
    }
    // Every recipe file is one of the above.
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "Caddyfile",
            "Procfile",
            "nginx.conf",
            "render.yaml",
            "wsloop.service"
        ],
        "a recipe this test does not know"
    );
    for r in &all {
        let (code, out) = run_check(r);
        eprintln!(
            "deploy/{}:{}: {:?} -> {code:?} {}",
            r.file,
            r.line,
            r.args,
            out.trim()
        );
        assert_eq!(code, Some(0), "deploy/{}:{} {r:?}: {out}", r.file, r.line);
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    let unit = read("wsloop.service");
    assert!(unit.contains("\nExecStart=/usr/local/bin/wsloop serve "));
    let dir = unique_tmp_path("wsloop-unit", "");
    std::fs::create_dir_all(&dir).unwrap();
    // The unit as installed, with the binary where this build put it.
    let path: &Path = &dir.join("wsloop.service");
    std::fs::write(
        path,
        unit.replace(
            "ExecStart=/usr/local/bin/wsloop ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_wsloop")),
        ),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Warnings (an unknown key, say) exit 0 too: none is allowed.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{said}",
        out.status
    );
}

/// Runs `cmd`; panics with its output unless it succeeds.
fn must_pass(what: &str, cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect(what);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {:?}\n{said}", out.status);
    said
}

#[test]
fn nginx_accepts_the_nginx_recipe() {
    let Some(nginx) = on_path("nginx").or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.is_file().then_some(p)
    }) else {
        eprintln!("SKIPPED: nginx is not installed");
        return;
    };
    let dir = unique_tmp_path("wsloop-nginx", "");
    std::fs::create_dir_all(&dir).unwrap();
    // The recipe as included in http { }, with a certificate of its own
    // where Let's Encrypt's would be.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["chat.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let site = read("nginx.conf")
        .replace(
            "/etc/letsencrypt/live/chat.example.com/fullchain.pem",
            &dir.join("cert.pem").display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/chat.example.com/privkey.pem",
            &dir.join("key.pem").display().to_string(),
        );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n    access_log off;\n    include {d}/site.conf;\n}}\n"
        ),
    )
    .unwrap();
    let said = must_pass(
        "nginx -t",
        Command::new(nginx)
            .arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf")),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!said.contains("[warn]"), "nginx -t: {said}");
}

#[test]
fn caddy_accepts_the_caddyfile() {
    let Some(caddy) = on_path("caddy") else {
        eprintln!("SKIPPED: caddy is not installed");
        return;
    };
    let said = must_pass(
        "caddy validate",
        Command::new(caddy)
            .args(["validate", "--adapter", "caddyfile", "--config"])
            .arg(deploy_dir().join("Caddyfile")),
    );
    assert!(
        said.contains("Valid configuration"),
        "caddy validate: {said}"
    );
}
