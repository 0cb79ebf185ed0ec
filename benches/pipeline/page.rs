//! The page scenario: the signed-in settings page at 32 connections, beside `/healthz`; with a
//! backlog; with the page cache off.

use super::*;

/// Signs in through the login form; returns the `cloudpki_session` cookie pair.
pub(super) async fn sign_in(base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client.get(format!("{base}/login")).send().await?;
    let csrf_cookie = set_cookie(page.headers(), "cloudpki_csrf").context("csrf cookie")?;
    let html = page.text().await?;
    let at = html
        .find(r#"name="csrf_token""#)
        .context("csrf_token field")?;
    let rest = &html[at..];
    let start = rest.find(r#"value=""#).context("csrf value")? + 7;
    let csrf = &rest[start..start + rest[start..].find('"').context("csrf end")?];
    let answer = client
        .post(format!("{base}/login"))
        .header("cookie", &csrf_cookie)
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", csrf),
        ])
        .send()
        .await?;
    set_cookie(answer.headers(), "cloudpki_session")
        .with_context(|| format!("sign-in answered {} without a session", answer.status()))
}

pub(super) fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

pub(super) async fn wait_healthy(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("cloudpki serve did not answer /healthz within {PROCESS_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn page(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    let db = ctx.pg.fresh("web").await?;
    let subs = db.subscriptions(1, &ctx.intake.base_url()).await?;
    let sub = subs[0];
    let addr = free_port()?;
    let server = Proc::spawn(
        &db,
        ctx.out_dir,
        "serve",
        &["serve", "--no-worker"],
        Some(addr),
    )?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(PAGE_CONNECTIONS)
        .build()?;
    wait_healthy(&client, &base).await?;
    let secs = ctx.sizes.load_secs;

    {
        let email = "bench-admin@example.com";
        let password = "correct horse battery staple";
        let user = Uuid::new_v4();
        sqlx::query("insert into users (id, email, password_hash) values ($1, $2, $3)")
            .bind(user)
            .bind(email)
            .bind(cloudpki::crypto::hash_password(password))
            .execute(&db.pool)
            .await?;
        sqlx::query(
            "insert into memberships (user_id, subscription_id, role) values ($1, $2, 'admin')",
        )
        .bind(user)
        .bind(sub)
        .execute(&db.pool)
        .await?;
        let session = sign_in(&base, email, password).await?;
        let get = |path: String, cookie: Option<String>| {
            let client = client.clone();
            move || {
                let (client, path, cookie) = (client.clone(), path.clone(), cookie.clone());
                async move {
                    let mut req = client.get(&path);
                    if let Some(c) = cookie {
                        req = req.header("cookie", c);
                    }
                    let r = req.send().await?;
                    if r.status() != StatusCode::OK {
                        bail!("GET {path} answered {}", r.status());
                    }
                    r.bytes().await?;
                    Ok(1)
                }
            }
        };
        // The target is for a subscription whose export keeps up (nothing owed); ingest left a
        // backlog behind (no worker runs).
        db.clear().await?;
        // Warm both paths (connections, prepared statements).
        closed_loop(PAGE_CONNECTIONS, 1, get(format!("{base}/healthz"), None)).await?;
        let settings = format!("{base}/subscriptions/{sub}/settings");
        closed_loop(
            PAGE_CONNECTIONS,
            1,
            get(settings.clone(), Some(session.clone())),
        )
        .await?;
        let (hn, hs, hl) =
            closed_loop(PAGE_CONNECTIONS, secs, get(format!("{base}/healthz"), None)).await?;
        let (pn, ps, pl) = closed_loop(
            PAGE_CONNECTIONS,
            secs,
            get(settings.clone(), Some(session.clone())),
        )
        .await?;
        let (health, page) = (hn as f64 / hs, pn as f64 / ps);
        report.push(
            Row::new(
                "page: settings, 32 connections",
                format!(
                    "{} req (p50 {} · p99 {})",
                    per_sec(page),
                    ms(percentile(&pl, 50.0)),
                    ms(percentile(&pl, 99.0))
                ),
                Some(page),
            )
            .baseline(
                format!(
                    "/healthz {} req (p50 {} · p99 {})",
                    per_sec(health),
                    ms(percentile(&hl, 50.0)),
                    ms(percentile(&hl, 99.0))
                ),
                health,
            )
            .target("≥ 5,000 req/s", page >= 5_000.0),
        );
        // The same page while the subscription has a backlog (the delivery health panel
        // counts it).
        let backlog = ctx.sizes.page_backlog;
        db.prefill(&[sub], backlog).await?;
        let (bn, bs, bl) = closed_loop(
            PAGE_CONNECTIONS,
            secs,
            get(settings.clone(), Some(session.clone())),
        )
        .await?;
        let with_backlog = bn as f64 / bs;
        report.push(
            Row::new(
                &format!("page: settings, {backlog} events owed"),
                format!(
                    "{} req (p50 {} · p99 {})",
                    per_sec(with_backlog),
                    ms(percentile(&bl, 50.0)),
                    ms(percentile(&bl, 99.0))
                ),
                Some(with_backlog),
            )
            .baseline(format!("nothing owed {} req", per_sec(page)), page)
            .target("≥ 0.8 × nothing owed", with_backlog >= 0.8 * page),
        );
        // What a view costs when the page cache cannot help (the first view after a change,
        // or CLOUDPKI_PAGE_CACHE=off): a second portal on the same database, same session.
        let uncached_addr = free_port()?;
        let uncached = Proc::spawn_with_env(
            &db,
            ctx.out_dir,
            "serve-page-cache-off",
            &["serve", "--no-worker"],
            Some(uncached_addr),
            &[("CLOUDPKI_PAGE_CACHE", "off")],
        )?;
        let uncached_base = format!("http://{uncached_addr}");
        wait_healthy(&client, &uncached_base).await?;
        let uncached_settings = format!("{uncached_base}/subscriptions/{sub}/settings");
        closed_loop(
            PAGE_CONNECTIONS,
            1,
            get(uncached_settings.clone(), Some(session.clone())),
        )
        .await?;
        let (un, us, ul) = closed_loop(
            PAGE_CONNECTIONS,
            secs,
            get(uncached_settings, Some(session)),
        )
        .await?;
        drop(uncached);
        let without_cache = un as f64 / us;
        report.push(
            Row::new(
                &format!("page: settings, {backlog} events owed, page cache off"),
                format!(
                    "{} req (p50 {} · p99 {})",
                    per_sec(without_cache),
                    ms(percentile(&ul, 50.0)),
                    ms(percentile(&ul, 99.0))
                ),
                Some(without_cache),
            )
            .baseline(
                format!("page cache on {} req", per_sec(with_backlog)),
                with_backlog,
            ),
        );
    }
    if let Some(kb) = server.peak_rss_kb() {
        report.server_peak_kb.push(("page".into(), kb));
    }
    drop(server);
    ctx.pg.drop_db(db).await;
    Ok(())
}
