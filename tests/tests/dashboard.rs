//! Issue 7, dashboard: headless Chromium (Debian's `chromium` + `chromium-driver`) opens the
//! dashboard of a running lab, finds every node drawn, crashes a node through the page's
//! controls, sees it turn dead in its peers' view, and saves a screenshot to
//! `target/test-artifacts/dashboard.png`. Chromium is driven over the W3C WebDriver protocol
//! (plain HTTP to `chromedriver`). Needs root (the lab) and the two packages.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lightcone_e2e::*;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end on drop, and any Chromium
/// process left with our profile directory is killed by pid.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start(profile: &Path, log: &Path) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: install Debian's chromium and chromium-driver (tests/setup.sh --deps)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            profile: profile.to_path_buf(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || ureq::get(&format!(
                "{}/status",
                b.base
            ))
            .call()
            .is_ok()),
            "chromedriver did not answer; see {}",
            log.display()
        );
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1500,950",
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; returns `value`, panics with the driver's message on error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(r) => r.into_json::<Value>().expect("driver JSON")["value"].clone(),
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "{method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn click(&self, css: &str) {
        let e = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = e[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css}: {e}"))
            .to_string();
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/click")),
            Some(json!({})),
        );
    }

    fn screenshot(&self, out: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(b64.as_str().expect("screenshot base64"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(out, png).unwrap();
    }

    fn console(&self) -> String {
        let url = format!("{}{}", self.base, self.s("/se/log"));
        ureq::post(&url)
            .send_json(json!({ "type": "browser" }))
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session))
                .timeout(Duration::from_secs(10))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium children that outlived the session (they carry our profile path).
        let needle = format!("--user-data-dir={}", self.profile.display());
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                if String::from_utf8_lossy(&cmd).contains(&needle) {
                    kill9(pid);
                }
            }
        }
    }
}

fn kill9(pid: i32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_roundtrip_of_known_text() {
    assert_eq!(base64_decode("bGlnaHRjb25l"), b"lightcone");
    assert_eq!(base64_decode("aGk="), b"hi");
}

/// `data-view` of a node as the page shows it.
fn view_of(b: &Browser, node: &str) -> String {
    b.js(&format!(
        "const e = document.querySelector('[data-node=\"{node}\"]'); return e ? e.getAttribute('data-view') : null;"
    ))
    .as_str()
    .unwrap_or("")
    .to_string()
}

#[test]
fn dashboard_draws_every_node_and_crashes_one() {
    require_root();
    let t = TestLab::shipped("dash", "cell.yaml");
    let lab = t.lab.clone();
    t.up(&[]);
    let st: Value = serde_json::from_str(&lc_ok(&["status", &lab, "--json"])).unwrap();
    let s = &st["labs"][0];
    let url = s["dashboard_url"].as_str().unwrap().to_string();
    let api = s["api_url"].as_str().unwrap().to_string();
    let nodes: Vec<String> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes.len(), 13, "cell.yaml: 12 tiles and an authority");

    // The fault API refuses requests without the lab's token.
    match ureq::post(&format!("{api}/api/nodes/l0c0k0t4/crash")).send_json(json!({})) {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("crash without token: expected 401, got {other:?}"),
    }

    let profile = t.dir().join("chromium-profile");
    let driver_log = t.dir().join("chromedriver.log");
    let b = Browser::start(&profile, &driver_log);
    b.goto(&url);

    // Every node is drawn once.
    let mut drawn = Vec::new();
    let all_drawn = wait_until(Duration::from_secs(20), || {
        let v = b.js("return [...document.querySelectorAll('[data-node]')].map(e => e.getAttribute('data-node'))");
        drawn = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        drawn.len() == nodes.len()
    });
    drawn.sort();
    let mut want = nodes.clone();
    want.sort();
    assert!(
        all_drawn && drawn == want,
        "drawn {drawn:?}, lab has {want:?}; console: {}",
        b.console()
    );
    let links_drawn = b.js("return document.querySelectorAll('[data-link]').length");
    assert_eq!(
        links_drawn.as_u64(),
        Some(s["links"].as_array().unwrap().len() as u64)
    );

    // The victim: a tile (not the gateway, whose link the partition below cuts) that the
    // live stream shows alive in its peers' view before the crash. On a loaded host peers
    // may wrongly suspect some tiles for a while, so take the first one shown alive.
    let mut victim = String::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            victim = b
                .js("const e = [...document.querySelectorAll('[data-node^=\"l0c0k0t\"][data-view=\"alive\"]')]
                       .map(e => e.getAttribute('data-node')).filter(n => n !== 'l0c0k0t0'); return e[0] || ''")
                .as_str()
                .unwrap_or("")
                .to_string();
            !victim.is_empty()
        }),
        "no tile ever shown alive; console: {}",
        b.console()
    );
    let victim = victim.as_str();
    println!("victim: {victim}");

    // Crash it through the page: select the node, press its crash button.
    b.click(&format!("[data-node=\"{victim}\"]"));
    assert!(
        wait_until(Duration::from_secs(10), || b
            .js("return !!document.getElementById('btn-crash')")
            .as_bool()
            == Some(true)),
        "node page has no crash button"
    );
    b.click("#btn-crash");

    // Peers declare it dead and the page turns it dead, without a reload.
    let marker = b.js("window.__no_reload = 1; return 1");
    assert_eq!(marker, json!(1));
    let dead = wait_until(Duration::from_secs(60), || {
        view_of(&b, victim) == "dead"
            && b.js(&format!(
                "return document.querySelector('[data-node=\"{victim}\"]').getAttribute('data-process')"
            )) != json!("running")
    });
    assert!(
        dead,
        "{victim} not shown dead (view {:?}); console: {}",
        view_of(&b, victim),
        b.console()
    );
    assert_eq!(
        b.js("return window.__no_reload === 1"),
        json!(true),
        "page reloaded"
    );
    let process = b.js(&format!(
        "return document.querySelector('[data-node=\"{victim}\"]').getAttribute('data-process')"
    ));
    assert_ne!(process, json!("running"));
    // The crash is on the timeline, and the other tiles are still alive.
    assert!(
        wait_until(Duration::from_secs(5), || b
            .js("return document.querySelectorAll('.evmark[data-kind=\"crash\"]').length")
            .as_u64()
            == Some(1)),
        "no crash marker on the timeline"
    );

    // Partition from the page: cut the cell off (its only outside link goes to the
    // authority), see the link drawn down and the lab report it down.
    let cell_link = s["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["a"] == "l0a0" || l["b"] == "l0a0")
        .and_then(|l| l["name"].as_str())
        .expect("a link to the authority")
        .to_string();
    b.js("const s = document.getElementById('group'); s.value = 'cell 0.0.0'; return s.value");
    b.click("#btn-partition");
    let link_down = |want: bool| {
        wait_until(Duration::from_secs(10), || {
            let on_page = b.js(&format!(
                "return document.getElementById('l-{cell_link}').classList.contains('down')"
            ));
            let st: Value = ureq::get(&format!("{api}/api/status"))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
            let l = st["links"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == cell_link)
                .cloned()
                .unwrap_or_default();
            on_page == json!(want) && l["up"] == json!(!want)
        })
    };
    assert!(link_down(true), "partition did not take {cell_link} down");
    let down_links = b.js("return document.querySelectorAll('.link.down').length");
    assert_eq!(down_links, json!(1), "only the cell's outside link is cut");
    assert!(
        wait_until(Duration::from_secs(5), || b
            .js("return document.querySelectorAll('.evmark[data-kind=\"partition\"]').length")
            .as_u64()
            == Some(1)),
        "no partition marker on the timeline"
    );
    std::thread::sleep(Duration::from_millis(1500)); // let the detail panel refresh

    let shot = repo_root()
        .join("target")
        .join("test-artifacts")
        .join("dashboard.png");
    b.screenshot(&shot);
    println!("screenshot: {}", shot.display());
    b.click("#btn-heal");
    assert!(link_down(false), "heal did not bring {cell_link} back up");
    drop(b);

    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}
