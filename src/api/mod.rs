//! The gRPC read API (`pcs.v1.PartnerScoreService`).

mod status;

pub use status::{ApiError, RESUME_CURSOR};

use crate::auth::{Authenticator, Caller, Partners, Scope};
use crate::calendar::parse_date;
use crate::clock::Clock;
use crate::engine::{PartnerState, evaluate, forecast_with_warnings};
use crate::events::validate_partner_id;
use crate::feed::{Cursor, WatchHub, WatchItem};
use crate::proto::{self, server::partner_score_service_server::PartnerScoreService};
use crate::rules::RuleBook;
use crate::store::{StateStore, StoredPartner, StoredScore};
use chrono::{Days, NaiveDate};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Most partners one BatchGetScores may name.
pub const MAX_BATCH: usize = 1000;
/// Largest request message the server decodes: requests are ids and dates, far smaller.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most days one GetScoreHistory answers.
pub const MAX_HISTORY_SPAN_DAYS: i64 = 400;
/// Most hypothetical events one SimulateScore may add.
pub const MAX_SIMULATED_EVENTS: usize = 1000;
/// Most scores one ListScores page may hold.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

pub struct ScoreApi<S> {
    pub store: S,
    pub rules: Arc<RuleBook>,
    pub clock: Clock,
    pub history_days: u32,
    pub hub: Arc<WatchHub>,
    pub watch_buffer: usize,
    /// One permit per open watch stream: the cap on concurrent streams.
    pub watchers: Arc<tokio::sync::Semaphore>,
    pub max_watchers: usize,
    pub shutdown: broadcast::Sender<()>,
    /// Bearer-token checks; `None` when the service runs without (loopback, mTLS only, or
    /// --insecure).
    pub auth: Option<Arc<Authenticator>>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument { field, message: message.into() }
}

fn partner_id(field: &'static str, id: &str) -> Result<(), ApiError> {
    validate_partner_id(id).map_err(|e| invalid(field, e.to_string()))
}

/// A stored score as served on `today`. Its shortfall plans are not stored (they follow from
/// the subcategory scores), so they are worked out again. Its qualification windows move
/// with the date while the score itself may not, so a score stored on an earlier day gets
/// them recomputed from the stored history.
fn served_score(
    partner_id: &str,
    stored: &StoredScore,
    today: NaiveDate,
    rules: &RuleBook,
) -> Result<proto::PartnerScore, ApiError> {
    let mut score = proto::decode_stored(&stored.score, rules).map_err(malformed)?;
    if parse_date(&score.as_of) != Some(today) {
        let history = StoredPartner::decode_history(partner_id, stored.history.as_deref())?;
        score.qualification_windows = proto::qualification_windows(&history, today);
    }
    Ok(score)
}

/// [`served_score`] encoded, made from the stored bytes without decoding the score whole:
/// what GetScore and BatchGetScores send (see `proto::served_encoding`).
fn served_encoding(
    partner_id: &str,
    stored: &StoredScore,
    today: NaiveDate,
    rules: &RuleBook,
) -> Result<Vec<u8>, ApiError> {
    let windows = if proto::stored_as_of(&stored.score).map_err(malformed)? == today {
        None
    } else {
        let history = StoredPartner::decode_history(partner_id, stored.history.as_deref())?;
        Some(proto::qualification_windows(&history, today))
    };
    proto::served_encoding(&stored.score, rules, windows.as_deref()).map_err(malformed)
}

fn malformed(e: proto::MalformedScore) -> ApiError {
    ApiError::Store(crate::store::StoreError::Protocol(format!("stored score: {e}")))
}

fn optional_date(field: &'static str, text: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => {
            parse_date(text).map(Some).ok_or_else(|| invalid(field, format!("{text:?} is not a YYYY-MM-DD date")))
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::ScoreChangedWire, Status>> + Send>>;

/// An open watch stream: holds its place under the cap and counts in `pcs.watchers.active`
/// until the stream's task ends.
struct WatcherSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl WatcherSlot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> WatcherSlot {
        crate::telemetry::metrics().active_watchers.add(1, &[]);
        WatcherSlot { _permit: permit }
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        crate::telemetry::metrics().active_watchers.add(-1, &[]);
    }
}

impl<S: StateStore> ScoreApi<S> {
    async fn get_score(
        &self,
        request: proto::GetScoreRequest,
        caller: Caller,
    ) -> Result<proto::GetScoreResponseWire, ApiError> {
        partner_id("partner_id", &request.partner_id)?;
        // Before any lookup: a forbidden partner gets the same answer whether it exists or not.
        caller.require_all([&request.partner_id])?;
        let today = self.clock.today();
        match optional_date("as_of", request.as_of.as_deref())? {
            None => {
                let stored = self.store.scores(std::slice::from_ref(&request.partner_id)).await?.remove(0);
                let stored = stored.ok_or_else(|| ApiError::NotFound(request.partner_id.clone()))?;
                let score = served_encoding(&request.partner_id, &stored, today, &self.rules)?;
                Ok(proto::GetScoreResponseWire::new(score, stored.version))
            }
            Some(as_of) => {
                self.within_history("as_of", as_of, today)?;
                let stored = self.store.load(&[(request.partner_id.clone(), Vec::new())]).await?.remove(0);
                if stored.version == 0 {
                    return Err(ApiError::NotFound(request.partner_id));
                }
                let mut score = self.scored(&request.partner_id, &stored.state, as_of);
                score.qualification_windows = proto::qualification_windows(&stored.history, as_of);
                Ok(proto::GetScoreResponseWire::new(prost::Message::encode_to_vec(&score), stored.version))
            }
        }
    }

    /// The oldest day answered: facts older than needed for it may be pruned.
    fn history_start(&self, today: NaiveDate) -> NaiveDate {
        today.checked_sub_days(Days::new(u64::from(self.history_days))).unwrap_or(today)
    }

    fn within_history(&self, field: &'static str, day: NaiveDate, today: NaiveDate) -> Result<(), ApiError> {
        let history_start = self.history_start(today);
        if day < history_start {
            return Err(ApiError::BeforeHistory {
                field,
                day: day.to_string(),
                history_start: history_start.to_string(),
            });
        }
        Ok(())
    }

    /// A partner's score on `as_of` evaluated from its facts, with its forecast.
    fn scored(&self, partner_id: &str, state: &PartnerState, as_of: NaiveDate) -> proto::PartnerScore {
        let score = evaluate(partner_id, state, as_of, &self.rules);
        let (forecast, warnings) = forecast_with_warnings(state, &score, as_of, &self.rules);
        let mut message = proto::PartnerScore::from(score);
        message.forecast = Some(proto::ScoreForecast::of(partner_id, &forecast, &warnings));
        message
    }

    async fn history(
        &self,
        request: proto::GetScoreHistoryRequest,
        caller: Caller,
    ) -> Result<proto::GetScoreHistoryResponse, ApiError> {
        partner_id("partner_id", &request.partner_id)?;
        caller.require_all([&request.partner_id])?;
        let today = self.clock.today();
        let to = optional_date("to", request.to.as_deref())?.unwrap_or(today);
        if to > today {
            return Err(invalid("to", format!("{to} is after today ({today})")));
        }
        let from = optional_date("from", request.from.as_deref())?
            .unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
        if from > to {
            return Err(invalid("from", format!("{from} is after to ({to})")));
        }
        if to.signed_duration_since(from).num_days() >= MAX_HISTORY_SPAN_DAYS {
            return Err(invalid("from", format!("at most {MAX_HISTORY_SPAN_DAYS} days per call")));
        }
        self.within_history("from", from, today)?;
        let stored = self.store.scores(std::slice::from_ref(&request.partner_id)).await?.remove(0);
        let stored = stored.ok_or_else(|| ApiError::NotFound(request.partner_id.clone()))?;
        let history = StoredPartner::decode_history(&request.partner_id, stored.history.as_deref())?;
        Ok(proto::GetScoreHistoryResponse {
            days: history.days(from, to).into_iter().map(|(day, s)| proto::DaySnapshot::of(day, s)).collect(),
            history_start: self.history_start(today).to_string(),
        })
    }

    async fn simulate(
        &self,
        request: proto::SimulateScoreRequest,
        caller: Caller,
    ) -> Result<proto::SimulateScoreResponse, ApiError> {
        partner_id("partner_id", &request.partner_id)?;
        caller.require_all([&request.partner_id])?;
        if request.events.len() > MAX_SIMULATED_EVENTS {
            return Err(ApiError::TooMany(format!(
                "events holds {} events; at most {MAX_SIMULATED_EVENTS} per SimulateScore",
                request.events.len()
            )));
        }
        let today = self.clock.today();
        let as_of = optional_date("as_of", request.as_of.as_deref())?.unwrap_or(today);
        self.within_history("as_of", as_of, today)?;
        let mut events = Vec::with_capacity(request.events.len());
        for (i, text) in request.events.iter().enumerate() {
            let event = crate::events::decode_json(text.as_bytes())
                .map_err(|e| invalid("events", format!("event {i}: {e}")))?;
            if event.partner_id != request.partner_id {
                return Err(invalid(
                    "events",
                    format!("event {i} is for partner {:?}, not {:?}", event.partner_id, request.partner_id),
                ));
            }
            events.push(event);
        }
        // A partner without events yet is simulated from no facts: "what would it score".
        let mut state = self.store.load(&[(request.partner_id.clone(), Vec::new())]).await?.remove(0).state;
        let baseline = self.scored(&request.partner_id, &state, as_of);
        let mut applied = 0;
        for (i, event) in events.iter().enumerate() {
            match state.apply_received(event, today) {
                Ok(crate::engine::Applied::New) => applied += 1,
                Ok(crate::engine::Applied::Redelivery) => {}
                Err(e) => return Err(invalid("events", format!("event {i}: {e}"))),
            }
        }
        Ok(proto::SimulateScoreResponse {
            score: Some(self.scored(&request.partner_id, &state, as_of)),
            baseline: Some(baseline),
            applied,
        })
    }

    async fn batch_get(
        &self,
        request: proto::BatchGetScoresRequest,
        caller: Caller,
    ) -> Result<proto::BatchGetScoresResponseWire, ApiError> {
        if request.partner_ids.len() > MAX_BATCH {
            return Err(ApiError::TooMany(format!(
                "partner_ids names {} partners; at most {MAX_BATCH} per BatchGetScores",
                request.partner_ids.len()
            )));
        }
        let mut seen = HashSet::new();
        let ids: Vec<String> = request.partner_ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
        for id in &ids {
            partner_id("partner_ids", id)?;
        }
        caller.require_all(&ids)?;
        let today = self.clock.today();
        let stored = self.store.scores(&ids).await?;
        let mut response = proto::BatchGetScoresResponseWire::default();
        for (id, score) in ids.into_iter().zip(stored) {
            match score {
                Some(s) => response.push_score(served_encoding(&id, &s, today, &self.rules)?),
                None => response.push_not_found(id),
            }
        }
        Ok(response)
    }

    /// Up to `limit` partner ids after `after` that the caller may see, in byte order. A
    /// caller limited to some partners pages through its own list (ids without a score are
    /// skipped by the caller of this), never through the store's.
    async fn next_ids(&self, caller: &Caller, after: &str, limit: usize) -> Result<Vec<String>, ApiError> {
        match &caller.partners {
            Partners::All => Ok(self.store.list_partners(after, limit).await?),
            Partners::Only(allowed) => {
                let mut ids: Vec<&String> = allowed.iter().filter(|id| id.as_str() > after).collect();
                ids.sort();
                Ok(ids.into_iter().take(limit).cloned().collect())
            }
        }
    }

    async fn list(
        &self,
        request: proto::ListScoresRequest,
        caller: Caller,
    ) -> Result<proto::ListScoresResponse, ApiError> {
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 || n as usize > MAX_PAGE => {
                return Err(invalid("page_size", format!("must be 0-{MAX_PAGE}, got {n}")));
            }
            n => n as usize,
        };
        let mut after = if request.page_token.is_empty() {
            String::new()
        } else {
            partner_id("page_token", &request.page_token)?;
            request.page_token.clone()
        };
        let designation = request.designation.filter(|d| !d.is_empty());
        if let Some(d) = &designation
            && !self.rules.sets().iter().any(|s| s.designations.iter().any(|x| x.name == *d))
        {
            return Err(invalid("designation", format!("{d:?} is not a designation of the rule set")));
        }
        let keep = |score: &proto::PartnerScore| -> bool {
            let mut designations =
                score.designations.iter().filter(|x| designation.as_ref().is_none_or(|d| x.designation == *d));
            match request.qualified {
                None => designation.is_none() || designations.next().is_some(),
                Some(q) => {
                    if designation.is_some() {
                        designations.any(|x| x.qualified == q)
                    } else if q {
                        designations.any(|x| x.qualified)
                    } else {
                        designations.all(|x| !x.qualified)
                    }
                }
            }
        };
        // A filtered page may need to look at more partners than it returns; a bounded look
        // keeps every call short, and the token lets the client carry on.
        let scan_limit = page_size * 10;
        let today = self.clock.today();
        let mut scanned = 0;
        let mut response = proto::ListScoresResponse::default();
        while response.scores.len() < page_size && scanned < scan_limit {
            let ids = self.next_ids(&caller, &after, page_size - response.scores.len()).await?;
            if ids.is_empty() {
                return Ok(response);
            }
            scanned += ids.len();
            let stored = self.store.scores(&ids).await?;
            for (id, score) in ids.iter().zip(stored) {
                if let Some(s) = score {
                    let score = served_score(id, &s, today, &self.rules)?;
                    if keep(&score) {
                        response.scores.push(score);
                    }
                }
                after = id.clone();
            }
        }
        response.next_page_token = after;
        Ok(response)
    }

    async fn watch(&self, request: proto::WatchScoresRequest, caller: Caller) -> Result<WatchStream, ApiError> {
        let wanted: Option<HashSet<String>> = match (request.all, request.partner_ids.is_empty()) {
            (true, true) => {
                caller.require_every_partner()?;
                None
            }
            (true, false) => return Err(invalid("partner_ids", "give partner_ids or all, not both")),
            (false, true) => return Err(invalid("partner_ids", "name at least one partner, or set all")),
            (false, false) => {
                for id in &request.partner_ids {
                    partner_id("partner_ids", id)?;
                }
                caller.require_all(&request.partner_ids)?;
                Some(request.partner_ids.into_iter().collect())
            }
        };
        let permit = Arc::clone(&self.watchers).try_acquire_owned().map_err(|_| {
            ApiError::TooMany(format!(
                "this instance already serves its limit of {} concurrent WatchScores streams (--max-watchers)",
                self.max_watchers
            ))
        })?;
        let permit = WatcherSlot::new(permit);
        let (tx, rx) = mpsc::channel::<Result<proto::ScoreChangedWire, Status>>(16);
        let to_change = move |item: &WatchItem| -> Option<Result<proto::ScoreChangedWire, Status>> {
            if wanted.as_ref().is_some_and(|w| !w.contains(&item.partner_id)) {
                return None;
            }
            Some(
                proto::ScoreChangedWire::new(item.score.clone(), item.version, item.cursor.encode())
                    .map_err(|e| ApiError::from(e).into()),
            )
        };
        if request.resume_cursor.is_empty() {
            let mut live = self.hub.subscribe();
            let mut shutdown = self.shutdown.subscribe();
            let buffer = self.watch_buffer;
            tokio::spawn(async move {
                let _permit = permit;
                let mut last = Cursor::default();
                loop {
                    let received = tokio::select! {
                        _ = shutdown.recv() => {
                            let _ = tx.send(Err(Status::unavailable(format!(
                                "server shutting down; resume with cursor {:?}", last.encode()
                            )))).await;
                            return;
                        }
                        received = live.recv() => received,
                    };
                    match received {
                        Ok(item) => {
                            last = item.cursor.clone();
                            if let Some(change) = to_change(&item)
                                && tx.send(change).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Err(ApiError::Lagged { buffer, cursor: last }.into())).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        } else {
            let cursor = Cursor::parse(&request.resume_cursor).map_err(|m| invalid("resume_cursor", m))?;
            let mut feed = self.hub.resume(cursor, self.shutdown.subscribe()).await?;
            tokio::spawn(async move {
                let _permit = permit;
                while let Some(item) = feed.recv().await {
                    if let Some(change) = to_change(&item)
                        && tx.send(change).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Reads the caller's trace context from gRPC metadata.
struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Runs one RPC in a server span (`rpc.*` attributes), continuing the caller's trace, for a
/// caller holding `scope` (checked first, when authentication is on).
async fn traced<T, R>(
    method: &'static str,
    auth: Option<&Authenticator>,
    scope: Scope,
    request: Request<T>,
    handle: impl AsyncFnOnce(T, Caller) -> Result<R, ApiError>,
) -> Result<Response<R>, Status> {
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format!("pcs.v1.PartnerScoreService/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "pcs.v1.PartnerScoreService",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(request.metadata())));
    let _ = span.set_parent(parent);
    crate::telemetry::record_trace_id(&span);
    let caller = match auth {
        None => Ok(Caller::unrestricted()),
        Some(auth) => auth.verify(request.metadata(), scope),
    };
    let result = match caller {
        Ok(caller) => handle(request.into_inner(), caller).instrument(span.clone()).await,
        Err(e) => Err(e.into()),
    }
    .map_err(Status::from);
    span.record("rpc.grpc.status_code", result.as_ref().err().map_or(0, |s| s.code() as i32));
    result.map(Response::new)
}

#[tonic::async_trait]
impl<S: StateStore> PartnerScoreService for ScoreApi<S> {
    async fn get_score(
        &self,
        request: Request<proto::GetScoreRequest>,
    ) -> Result<Response<proto::GetScoreResponseWire>, Status> {
        traced("GetScore", self.auth.as_deref(), Scope::Read, request, async |r, c| self.get_score(r, c).await).await
    }

    async fn batch_get_scores(
        &self,
        request: Request<proto::BatchGetScoresRequest>,
    ) -> Result<Response<proto::BatchGetScoresResponseWire>, Status> {
        traced("BatchGetScores", self.auth.as_deref(), Scope::Read, request, async |r, c| self.batch_get(r, c).await)
            .await
    }

    async fn list_scores(
        &self,
        request: Request<proto::ListScoresRequest>,
    ) -> Result<Response<proto::ListScoresResponse>, Status> {
        traced("ListScores", self.auth.as_deref(), Scope::List, request, async |r, c| self.list(r, c).await).await
    }

    type WatchScoresStream = WatchStream;

    async fn watch_scores(
        &self,
        request: Request<proto::WatchScoresRequest>,
    ) -> Result<Response<Self::WatchScoresStream>, Status> {
        traced("WatchScores", self.auth.as_deref(), Scope::Watch, request, async |r, c| self.watch(r, c).await).await
    }

    async fn get_score_history(
        &self,
        request: Request<proto::GetScoreHistoryRequest>,
    ) -> Result<Response<proto::GetScoreHistoryResponse>, Status> {
        traced("GetScoreHistory", self.auth.as_deref(), Scope::Read, request, async |r, c| self.history(r, c).await)
            .await
    }

    async fn simulate_score(
        &self,
        request: Request<proto::SimulateScoreRequest>,
    ) -> Result<Response<proto::SimulateScoreResponse>, Status> {
        traced("SimulateScore", self.auth.as_deref(), Scope::Read, request, async |r, c| self.simulate(r, c).await)
            .await
    }
}
