//! Headless Debian Chromium driven through ChromeDriver (WebDriver), for the golden paths.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};

/// A ChromeDriver process and one browser session in it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        // Two rustls back-ends are linked (ring for reqwest, aws-lc for fantoccini's hyper);
        // WebDriver runs over plain loopback http, so either will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (bash .ci/setup --test installs chromium-driver)");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::rustls()
                .expect("rustls client")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot open a Chromium session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Finds one element by CSS, waiting for it to appear.
    pub async fn wait_css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Clicks a submit button and waits until the next page has replaced the current one
    /// (the old document's root element goes stale), so nothing is read from the old page.
    pub async fn submit_with(&self, css: &str) {
        let old = self
            .client
            .find(Locator::Css("html"))
            .await
            .expect("a page is loaded");
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .expect("click");
        let deadline = Instant::now() + Duration::from_secs(20);
        while old.tag_name().await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "clicking {css} did not load a new page"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Signs in on `base_url` with the tests' password and waits for the subscriptions list.
    pub async fn sign_in(&self, base_url: &str, email: &str, password: &str) {
        self.client
            .goto(&format!("{base_url}/login"))
            .await
            .expect("open sign-in");
        self.wait_css("#email")
            .await
            .send_keys(email)
            .await
            .expect("type email");
        self.client
            .find(Locator::Css("#password"))
            .await
            .expect("password field")
            .send_keys(password)
            .await
            .expect("type password");
        self.submit_with("button[type=submit].primary").await;
        self.wait_css("ul.cards").await;
    }

    /// Runs axe-core (WCAG 2.0/2.1/2.2 A and AA rules) on the current page; one line per
    /// violation: rule, impact, and the elements.
    pub async fn axe_violations(&self) -> Vec<String> {
        let axe = std::fs::read_to_string(axe_path())
            .expect("axe-core is installed (bash .ci/setup --test installs it)");
        self.client
            .execute(&axe, Vec::new())
            .await
            .expect("load axe-core");
        let script = r#"
            const done = arguments[arguments.length - 1];
            axe.run(document, { runOnly: { type: 'tag', values:
                ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] } })
              .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' +
                v.nodes.map(n => n.target.join(' ')).join(', '))))
              .catch(e => done(['axe failed: ' + e]));
        "#;
        let result = self
            .client
            .execute_async(script, Vec::new())
            .await
            .expect("run axe-core");
        serde_json::from_value(result).expect("a list of violations")
    }

    /// Saves a screenshot under `target/screenshots/`.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Where `.ci/setup --test` installs axe-core (`CLOUDPKI_AXE` overrides).
fn axe_path() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("CLOUDPKI_AXE") {
        return path.into();
    }
    let mut roots = Vec::new();
    if let Ok(dir) = std::env::var("CLOUDPKI_TOOLS_DIR") {
        roots.push(std::path::PathBuf::from(dir));
    }
    roots.push("/var/cache/cloudpki-tools".into());
    if let Ok(home) = std::env::var("HOME") {
        roots.push(std::path::PathBuf::from(home).join(".cache/cloudpki-tools"));
    }
    roots
        .into_iter()
        .map(|root| root.join("axe/node_modules/axe-core/axe.min.js"))
        .find(|path| path.exists())
        .unwrap_or_else(|| "axe.min.js".into())
}
