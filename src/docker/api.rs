//! The few calls of the Docker Engine API we make (Podman's Docker-compatible service
//! answers them alike), over the engine's unix socket: a volume's mountpoint, the
//! containers carrying a label, stop, start, inspect. A small typed client on hyper rather
//! than bollard: bollard's generated types are strict enums, and Podman reports states
//! they do not list (`"stopping"` while a container stops), which fails the whole listing
//! exactly when it matters; here a state is a string and only `running` is special.
//! Every answer is bounded (a hostile or broken engine cannot make us read without end)
//! and every call has a deadline.
//!
//! Blocking: each call runs on a small runtime of its own, so the synchronous engine and
//! the CLI use it as they are, and the daemon from its blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ContainerFailure, Error, Result};

/// The most of an answer we read: a listing of a few thousand containers fits.
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;
/// How long a call other than a stop may take (connect, ask, read the answer).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The API version asked for: old enough for every Docker since 20.10 and for Podman's
/// compatibility service, which both accept a lower version than they speak.
const API_VERSION: &str = "v1.41";

/// A container as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    /// Its name without the leading `/`.
    pub name: String,
    /// `running`, `exited`, `created`, `stopping`…: kept as the engine says it.
    pub state: String,
    /// The value of the label the listing asked for.
    pub label: String,
}

impl ContainerSummary {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// What inspecting a container tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    pub status: String,
    pub started_at: String,
}

/// The engine at one unix socket.
pub struct EngineApi {
    socket: PathBuf,
    /// `unix:///…` as configured, for messages.
    host: String,
    runtime: tokio::runtime::Runtime,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeAnswer {
    mountpoint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectAnswer {
    state: InspectState,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    running: bool,
    #[serde(default)]
    status: String,
    #[serde(default)]
    started_at: String,
}

/// An answer the engine gave: its status and body.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl Answer {
    /// The engine's own message (`{"message": "…"}`), else the body as text.
    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Message {
            message: String,
        }
        match serde_json::from_slice::<Message>(&self.body) {
            Ok(m) => m.message,
            Err(_) => String::from_utf8_lossy(&self.body[..self.body.len().min(500)]).into(),
        }
    }
}

impl EngineApi {
    pub fn new(host: &str, socket: &Path) -> Result<EngineApi> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the container engine client", socket, e))?;
        Ok(EngineApi {
            socket: socket.to_path_buf(),
            host: host.to_string(),
            runtime,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn failure(&self, op: String, kind: ContainerFailure, detail: String) -> Error {
        Error::Container {
            host: self.host.clone(),
            op,
            kind,
            detail,
        }
    }

    /// One call: `method` on `path` (after the version prefix), within `deadline`.
    fn call(&self, op: &str, method: Method, path: &str, deadline: Duration) -> Result<Answer> {
        let uri = format!("/{API_VERSION}{path}");
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::Internal(format!("build the request {uri}: {e}")))?;
        let socket = self.socket.clone();
        let asked = async move {
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .map_err(|e| (ContainerFailure::Unreachable, e.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| (ContainerFailure::Unreachable, e.to_string()))?;
            let connection = tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| (ContainerFailure::Unreachable, e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| (ContainerFailure::Unreachable, e.to_string()))?
                .to_bytes();
            connection.abort();
            Ok::<_, (ContainerFailure, String)>(Answer { status, body })
        };
        let answered = self
            .runtime
            .block_on(async { tokio::time::timeout(deadline, asked).await });
        match answered {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err((kind, detail))) => Err(self.failure(op.to_string(), kind, detail)),
            Err(_) => Err(self.failure(
                op.to_string(),
                ContainerFailure::Timeout,
                format!(
                    "no answer within {}",
                    crate::units::format_duration(deadline)
                ),
            )),
        }
    }

    fn parse<T: DeserializeOwned>(&self, op: &str, answer: &Answer) -> Result<T> {
        serde_json::from_slice(&answer.body).map_err(|e| {
            self.failure(
                op.to_string(),
                ContainerFailure::Refused,
                format!("its answer did not parse: {e}"),
            )
        })
    }

    fn refused(&self, op: &str, answer: &Answer) -> Error {
        let kind = match answer.status {
            StatusCode::NOT_FOUND => ContainerFailure::NotFound,
            _ => ContainerFailure::Refused,
        };
        self.failure(
            op.to_string(),
            kind,
            format!("{} ({})", answer.message(), answer.status),
        )
    }

    /// Whether the engine answers at all (`GET /_ping`).
    pub fn ping(&self) -> Result<()> {
        let op = "reach the engine";
        let answer = self.call(op, Method::GET, "/_ping", CALL_TIMEOUT)?;
        match answer.status.is_success() {
            true => Ok(()),
            false => Err(self.refused(op, &answer)),
        }
    }

    /// Where volume `name` is on this host.
    pub fn volume_mountpoint(&self, name: &str) -> Result<PathBuf> {
        let op = format!("find the volume `{name}`");
        let answer = self.call(&op, Method::GET, &format!("/volumes/{name}"), CALL_TIMEOUT)?;
        if !answer.status.is_success() {
            return Err(self.refused(&op, &answer));
        }
        let volume: VolumeAnswer = self.parse(&op, &answer)?;
        let path = PathBuf::from(&volume.mountpoint);
        // The engine is trusted with where its volumes are, not with what a path is.
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(self.failure(
                op,
                ContainerFailure::Refused,
                format!(
                    "its mountpoint `{}` is not a plain absolute path",
                    volume.mountpoint
                ),
            ));
        }
        Ok(path)
    }

    /// Every container (running or not) carrying `label`, with the label's value.
    pub fn labelled(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        let op = format!("list the containers labelled {label}");
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("all", "true")
            .append_pair("filters", &filters)
            .finish();
        let answer = self.call(
            &op,
            Method::GET,
            &format!("/containers/json?{query}"),
            CALL_TIMEOUT,
        )?;
        if !answer.status.is_success() {
            return Err(self.refused(&op, &answer));
        }
        let listed: Vec<ListedContainer> = self.parse(&op, &answer)?;
        Ok(listed
            .into_iter()
            // The filter is the engine's; the label is checked again here.
            .filter_map(|c| {
                let value = c.labels.as_ref()?.get(label)?.clone();
                let name = c
                    .names
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| c.id.chars().take(12).collect());
                Some(ContainerSummary {
                    id: c.id,
                    name,
                    state: c.state,
                    label: value,
                })
            })
            .filter(|c| valid_id(&c.id))
            .collect())
    }

    /// Stop container `id` (named `name` in messages): the engine sends its stop signal
    /// and, after the container's own grace period, kills it; not stopped within
    /// `timeout` is a failure naming it.
    pub fn stop(&self, id: &str, name: &str, timeout: Duration) -> Result<()> {
        self.container_action("stop", id, name, timeout)
    }

    /// Start container `id` again.
    pub fn start(&self, id: &str, name: &str) -> Result<()> {
        self.container_action("start", id, name, CALL_TIMEOUT)
    }

    /// `POST /containers/{id}/{action}`; 304 (stopped or started already) is success.
    fn container_action(
        &self,
        action: &str,
        id: &str,
        name: &str,
        deadline: Duration,
    ) -> Result<()> {
        let op = format!("{action} the container `{name}`");
        let path = format!("/containers/{id}/{action}");
        let answer = self.call(&op, Method::POST, &path, deadline)?;
        match answer.status {
            s if s.is_success() || s == StatusCode::NOT_MODIFIED => Ok(()),
            _ => Err(self.refused(&op, &answer)),
        }
    }

    /// Container `id`'s state; `None` when it no longer exists.
    pub fn inspect(&self, id: &str, name: &str) -> Result<Option<ContainerState>> {
        let op = format!("inspect the container `{name}`");
        let answer = self.call(
            &op,
            Method::GET,
            &format!("/containers/{id}/json"),
            CALL_TIMEOUT,
        )?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(self.refused(&op, &answer));
        }
        let inspected: InspectAnswer = self.parse(&op, &answer)?;
        Ok(Some(ContainerState {
            running: inspected.state.running,
            status: inspected.state.status,
            started_at: inspected.state.started_at,
        }))
    }
}

/// A container id as engines write them: 64 hex digits. Anything else never reaches a
/// request path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
