//! `floodgate notify --test`: sends one notice through the configured channels (the mail, by `sendmail` or
//! `notify.smtp`, and the exec hook) the way the daemon would, so that an admin sees the path work before an
//! attack does: a convergence of a port over the last ten minutes, with that period's report attached. Nothing
//! is recorded, banned or throttled.

use anyhow::{bail, Context, Result};
use chrono::{SubsecRound, Utc};

use crate::notice::{Notice, NoticeKind, Notifier, ReportSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Send the test notice (required: nothing else is sent by hand).
    #[arg(long, required = true)]
    pub test: bool,
    /// The port the test convergence is about (its report is that port's).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub port: u16,
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let notify = &ctx.config.notify;
    if !notify.is_enabled() {
        bail!("nothing to send to: set notify.mail_to or notify.exec in the config");
    }
    let now = Utc::now().trunc_subsecs(0);
    let since = now - chrono::Duration::minutes(10);
    let port = args.port;
    let notice = Notice::new(
        NoticeKind::Converged,
        now,
        format!("floodgate on {}: TEST: port {port}: attack over (a test notice)", crate::notice::hostname()),
        format!(
            "A test notice sent by `floodgate notify --test`: no attack happened. The daemon sends one like it when \
             an attack on a port is over; attached is the report of port {port} over the last ten minutes."
        ),
        serde_json::json!({ "test": true, "attack_since": since.to_rfc3339() }),
    )
    .about(format!("port {port}"));
    let notifier = Notifier::new(notify.clone()).with_reports(ReportSource::new(ctx.config.clone(), &ctx.db));
    notifier.send(&notice).context("the test notice was not sent")?;
    let mut said = Vec::new();
    if !notify.mail_to.is_empty() {
        let how = match &notify.smtp {
            Some(server) => format!("over SMTP to {server}"),
            None => format!("through {}", notify.sendmail.display()),
        };
        said.push(format!("mailed to {} {how}", notify.mail_to.join(", ")));
    }
    if let Some(exec) = &notify.exec {
        said.push(format!("handed to {}", exec.display()));
    }
    println!("test notice {}", said.join("; "));
    Ok(())
}
