//! Delivering a rendered digest: a file (the `file` document sink), a webhook (one POST, Slack
//! Block Kit or JSON), an email over SMTP (lettre), an Asana status update or a task comment.
//!
//! A delivery is split into units (one per recipient when each assignee gets their part, one
//! per project when each project gets its status update); the job records each unit's state in
//! its checkpoint (ARCHITECTURE.md, "The digest job"). Here each unit is sent once and its
//! failure classified: worth a retry (unreachable, 5xx, 4xx SMTP replies) or final (a 4xx from
//! a webhook, a rejected recipient, a refused login).

use std::path::PathBuf;

use lettre::message::{Mailbox, MultiPart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::model::DigestModel;
use super::render::{self, RenderError, Template};
use super::settings::{Channel, Format, Recipients, SmtpTls};
use crate::asana::{ApiRequest, AsanaClient, AsanaError, Idempotency, ListWalk, Query, segment};
use crate::config::jobs::beside_job_file;
use crate::credentials::TokenSource;
use crate::sinks::SinkError;
use crate::sinks::document::file::{FileDocumentSettings, FileDocumentSink};
use crate::sinks::document::{Content, Document, DocumentSink};
use crate::sinks::http_post::{PostBody, Poster};

/// One thing to send: a channel's whole digest, or one recipient's or project's part.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Its key in the checkpoint: `<index>-<type>` or `<index>-<type>/<group key>`.
    pub id: String,
    /// The channel's index in `deliver`.
    pub channel: usize,
    /// The group it carries alone, if any.
    pub group: Option<String>,
    /// Where it goes, for messages (an address, a project).
    pub target: String,
}

/// Whether sending a unit twice could deliver two copies: such units are recorded as being
/// sent before they are sent, and never sent again after a crash in between.
pub fn at_most_once(channel: &Channel) -> bool {
    matches!(channel, Channel::Webhook { .. } | Channel::Email { .. })
}

/// The units of `channel` for `model`, and the groups it cannot reach (an assignee without a
/// visible email).
pub fn units(index: usize, channel: &Channel, model: &DigestModel) -> (Vec<Unit>, Vec<String>) {
    let id = format!("{index}-{}", channel.type_name());
    let whole = |target: String| Unit {
        id: id.clone(),
        channel: index,
        group: None,
        target,
    };
    match channel {
        Channel::Email {
            to: Recipients::Assignees(_),
            ..
        } => {
            let mut units = Vec::new();
            let mut unreachable = Vec::new();
            for group in &model.groups {
                match &group.email {
                    Some(email) if group.kind == "assignee" => units.push(Unit {
                        id: format!("{id}/{}", group.key),
                        channel: index,
                        group: Some(group.key.clone()),
                        target: email.clone(),
                    }),
                    _ => unreachable.push(group.name.clone()),
                }
            }
            (units, unreachable)
        }
        Channel::Email {
            to: Recipients::Fixed(addresses),
            ..
        } => (vec![whole(addresses.join(", "))], vec![]),
        Channel::AsanaStatus { parent: None, .. } => (
            model
                .groups
                .iter()
                .filter(|group| group.kind == "project")
                .map(|group| Unit {
                    id: format!("{id}/{}", group.key),
                    channel: index,
                    group: Some(group.key.clone()),
                    target: format!("project {}", group.key),
                })
                .collect(),
            vec![],
        ),
        Channel::AsanaStatus {
            parent: Some(parent),
            ..
        } => (vec![whole(format!("status updates of {parent}"))], vec![]),
        Channel::AsanaComment { task, .. } => (vec![whole(format!("task {task}"))], vec![]),
        Channel::File { dir, .. } => (vec![whole(dir.display().to_string())], vec![]),
        Channel::Webhook { endpoint, .. } => (vec![whole(endpoint.url.clone())], vec![]),
    }
}

/// Why a unit was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another attempt later (unreachable, a 5xx, a temporary SMTP reply).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help until the configuration or the receiver changes.
    #[error("{0}")]
    Final(String),
    /// Asana refused or failed.
    #[error(transparent)]
    Asana(#[from] AsanaError),
    /// The template failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl From<SinkError> for DeliveryError {
    fn from(error: SinkError) -> Self {
        if error.is_transient() {
            DeliveryError::Transient(error.to_string())
        } else {
            DeliveryError::Final(error.to_string())
        }
    }
}

/// What a unit's delivery needs besides the digest.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryContext<'a> {
    /// The job's name (the file sink's stream, the idempotency keys).
    pub job: &'a str,
    /// The job file, whose directory relative template paths start from.
    pub job_file: &'a std::path::Path,
    /// The Asana client of the job's credential.
    pub client: &'a AsanaClient,
}

impl DeliveryContext<'_> {
    fn template(&self, configured: &Option<PathBuf>, builtin: Format) -> Template {
        match configured {
            Some(path) => Template::File(beside_job_file(self.job_file, path)),
            None => Template::Builtin(builtin),
        }
    }
}

/// The line that marks a digest posted to Asana, so a retry can find it there.
pub fn asana_marker(model: &DigestModel) -> String {
    format!("asana-worker job {}, period {}", model.job, model.period)
}

/// Text for Asana (a status update, a comment): the text template, with the marker line added
/// when a user template left it out.
fn asana_text(template: &Template, model: &DigestModel) -> Result<String, RenderError> {
    let mut text = render::render(template, model, false)?;
    let marker = asana_marker(model);
    if !text.contains(&marker) {
        text = format!("{}\n\nSent by {marker}.", text.trim_end());
    }
    Ok(text)
}

/// Sends one unit. `retrying` says an earlier attempt may have sent it (the unit was recorded
/// as being sent): idempotent channels look for it first (Asana) or find it (file).
pub async fn deliver(
    cx: DeliveryContext<'_>,
    channel: &Channel,
    unit: &Unit,
    model: &DigestModel,
    retrying: bool,
) -> Result<String, DeliveryError> {
    let part;
    let model = match &unit.group {
        Some(group) => {
            part = model.only_group(group);
            &part
        }
        None => model,
    };
    match channel {
        Channel::File {
            dir,
            format,
            template,
        } => {
            let rendered = render::render(&cx.template(template, *format), model, false)?;
            let (sha256, _) =
                crate::sinks::document::sha256_of(Content::Bytes(rendered.as_bytes()))
                    .unwrap_or_default();
            let name = format!("{}.{}", model.period, format.extension());
            let sink = FileDocumentSink::new(&FileDocumentSettings { dir: dir.clone() });
            let metadata = json!({
                "job": model.job,
                "period": model.period,
                "as_of": model.as_of_utc,
                "since": model.since_utc,
                "tasks": model.total,
                "source": model.source,
            });
            let delivered = sink
                .deliver(&Document {
                    stream: cx.job,
                    name: &name,
                    content: Content::Bytes(rendered.as_bytes()),
                    media_type: format.media_type(),
                    sha256: &sha256,
                    metadata: Some(&metadata),
                })
                .await?;
            Ok(delivered.location)
        }
        Channel::Webhook {
            endpoint,
            format,
            template,
        } => {
            let body = render::render(&cx.template(template, *format), model, true)?;
            let url = endpoint.parsed_url("webhook")?;
            let poster = Poster::new(endpoint, url, "Bearer", "the webhook", "webhook")?;
            let key = format!("{}-{}-{}", cx.job, model.period, unit.id.replace('/', "-"));
            poster
                .post(
                    cx.job,
                    PostBody::Bytes(bytes::Bytes::from(body)),
                    "application/json",
                    &key,
                    &[],
                )
                .await?;
            Ok(endpoint.url.clone())
        }
        Channel::Email { .. } => send_email(cx, channel, unit, model).await,
        Channel::AsanaStatus {
            parent,
            status_type,
            template,
        } => {
            let parent = match (parent, &unit.group) {
                (Some(parent), _) => parent.to_string(),
                (None, Some(project)) => project.clone(),
                (None, None) => {
                    return Err(DeliveryError::Final(
                        "a status update needs a parent or a project group".into(),
                    ));
                }
            };
            let text = asana_text(&cx.template(template, Format::Text), model)?;
            let marker = asana_marker(model);
            if retrying
                && let Some(found) = find_status_update(cx.client, &parent, model, &marker).await?
            {
                return Ok(format!("status update {found} (found after a retry)"));
            }
            let title = match &model.recipient {
                Some(name) => format!("{}: {name}, {}", model.title, model.today),
                None => format!("{}: {}", model.title, model.today),
            };
            let created: Value = cx
                .client
                .data(&ApiRequest::post(
                    "/status_updates",
                    json!({
                        "parent": parent,
                        "status_type": status_type.as_str(),
                        "title": title,
                        "text": text,
                    }),
                    Idempotency::NotIdempotent,
                ))
                .await?;
            Ok(format!(
                "status update {}",
                created.get("gid").and_then(Value::as_str).unwrap_or("?")
            ))
        }
        Channel::AsanaComment { task, template } => {
            let text = asana_text(&cx.template(template, Format::Text), model)?;
            let marker = asana_marker(model);
            let path = format!("/tasks/{}/stories", segment(task.as_str()));
            if retrying {
                let stories = ListWalk::<Value>::new(
                    cx.client.clone(),
                    path.clone(),
                    Query::new().opt_fields(&["text", "resource_subtype"]),
                )
                .collect()
                .await?;
                if let Some(found) = stories.iter().find(|story| {
                    story
                        .get("text")
                        .and_then(Value::as_str)
                        .is_some_and(|text| text.contains(&marker))
                }) {
                    return Ok(format!(
                        "comment {} (found after a retry)",
                        found.get("gid").and_then(Value::as_str).unwrap_or("?")
                    ));
                }
            }
            let created: Value = cx
                .client
                .data(&ApiRequest::post(
                    path,
                    json!({ "text": text }),
                    Idempotency::NotIdempotent,
                ))
                .await?;
            Ok(format!(
                "comment {}",
                created.get("gid").and_then(Value::as_str).unwrap_or("?")
            ))
        }
    }
}

/// A status update on `parent` that carries `marker`, posted since the digest was prepared.
async fn find_status_update(
    client: &AsanaClient,
    parent: &str,
    model: &DigestModel,
    marker: &str,
) -> Result<Option<String>, AsanaError> {
    // A day's margin: clocks differ, and a status update is posted after the digest's instant.
    let since = model.as_of_utc - chrono::Duration::days(1);
    let updates = ListWalk::<Value>::new(
        client.clone(),
        "/status_updates",
        Query::new()
            .param("parent", parent)
            .param(
                "created_since",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .opt_fields(&["text"]),
    )
    .collect()
    .await?;
    Ok(updates
        .iter()
        .find(|u| {
            u.get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains(marker))
        })
        .and_then(|u| u.get("gid").and_then(Value::as_str).map(str::to_string)))
}

/// The SMTP transport an email channel describes.
fn smtp_transport(
    channel: &Channel,
    job_file: &std::path::Path,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
    let Channel::Email {
        host,
        port,
        tls,
        ca_file,
        username,
        password_file,
        password_env,
        timeout,
        ..
    } = channel
    else {
        return Err(DeliveryError::Final("not an email delivery".into()));
    };
    let config = |message: String| DeliveryError::Final(format!("email: {message}"));
    let parameters = || -> Result<TlsParameters, DeliveryError> {
        let mut builder = TlsParameters::builder(host.clone());
        if let Some(file) = ca_file {
            let file = beside_job_file(job_file, file);
            let pem = std::fs::read(&file)
                .map_err(|e| config(format!("cannot read ca_file {}: {e}", file.display())))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|e| config(format!("ca_file {}: {e}", file.display())))?;
            builder = builder.add_root_certificate(certificate);
        }
        builder
            .build_rustls()
            .map_err(|e| config(format!("TLS setup for {host}: {e}")))
    };
    let (tls, default_port) = match tls {
        SmtpTls::Starttls => (Tls::Required(parameters()?), 587),
        SmtpTls::Tls => (Tls::Wrapper(parameters()?), 465),
        SmtpTls::None => (Tls::None, 25),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(port.unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(*timeout));
    if let Some(user) = username {
        let source = match (password_file, password_env) {
            (Some(file), _) => Some(TokenSource::File(file.clone())),
            (None, Some(var)) => Some(TokenSource::Env(var.clone())),
            (None, None) => None,
        };
        let password = match source {
            Some(source) => crate::credentials::read_token("SMTP password", &source)
                .map_err(|e| DeliveryError::Transient(format!("email: {e}")))?
                .expose_secret()
                .to_string(),
            None => String::new(),
        };
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

async fn send_email(
    cx: DeliveryContext<'_>,
    channel: &Channel,
    unit: &Unit,
    model: &DigestModel,
) -> Result<String, DeliveryError> {
    let Channel::Email {
        host,
        from,
        to,
        subject,
        template,
        text_template,
        ..
    } = channel
    else {
        return Err(DeliveryError::Final("not an email delivery".into()));
    };
    let html = render::render(&cx.template(template, Format::Html), model, false)?;
    let text = render::render(&cx.template(text_template, Format::Text), model, false)?;
    let from: Mailbox = from
        .parse()
        .map_err(|e| DeliveryError::Final(format!("email: from {from:?}: {e}")))?;
    let recipients: Vec<String> = match to {
        Recipients::Fixed(addresses) => addresses.clone(),
        Recipients::Assignees(_) => vec![unit.target.clone()],
    };
    let subject = subject.clone().unwrap_or_else(|| match &model.recipient {
        Some(name) => format!("{}: {name}, {}", model.title, model.today),
        None => format!("{}: {}", model.title, model.today),
    });
    // The same Message-ID on every attempt of the same period and recipient: mail systems that
    // deduplicate by Message-ID drop a second copy.
    let message_id = format!(
        "<digest.{}.{}.{}@asana-worker>",
        sanitize(cx.job),
        sanitize(&model.period),
        sanitize(&unit.id)
    );
    let mut builder = Message::builder()
        .from(from)
        .subject(subject)
        .message_id(Some(message_id));
    for address in &recipients {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|e| DeliveryError::Final(format!("email: recipient {address:?}: {e}")))?;
        builder = builder.to(mailbox);
    }
    let message = builder
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    lettre::message::SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    lettre::message::SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
        .map_err(|e| DeliveryError::Final(format!("email: cannot build the message: {e}")))?;
    let transport = smtp_transport(channel, cx.job_file)?;
    match transport.send(message).await {
        Ok(response) => Ok(format!(
            "{} via {host} ({})",
            recipients.join(", "),
            response.code()
        )),
        Err(error) => Err(classify_smtp(host, &recipients, &error)),
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A temporary SMTP reply, a timeout or an unreachable server is retried; a permanent reply (a
/// rejected recipient or sender, a refused login) or a TLS failure is final.
fn classify_smtp(
    host: &str,
    recipients: &[String],
    error: &lettre::transport::smtp::Error,
) -> DeliveryError {
    // lettre's message already names the cause (its source is part of it).
    let chain = error.to_string();
    let tls_failure = error.is_tls() || chain.contains("certificate");
    if error.is_permanent() {
        DeliveryError::Final(format!(
            "the SMTP server {host} refused the message to {}: {chain}; check the addresses (a rejected recipient), the sender and the login",
            recipients.join(", ")
        ))
    } else if tls_failure {
        DeliveryError::Final(format!(
            "TLS with the SMTP server {host} failed: {chain}; check `tls` and `port` (starttls: 587, tls: 465) and, for a private CA, `ca_file`"
        ))
    } else if error.is_transient() {
        DeliveryError::Transient(format!("the SMTP server {host} answered: {chain}"))
    } else {
        DeliveryError::Transient(format!("cannot reach the SMTP server {host}: {chain}"))
    }
}
