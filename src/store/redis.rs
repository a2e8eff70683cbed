//! The Redis store. One hash per partner (`<prefix>:{<partner_id>}`), plus three index keys
//! that are never touched together with a partner key: `<prefix>:partners` (ids, for
//! listing), `<prefix>:due` (the day each partner's score next changes by itself) and
//! `<prefix>:unpublished` (the rollover's changes not yet published).

use super::packed::{pack, unpack};
use super::{PartnerWrite, SourcePartition, StateStore, StoreError, StoredPartner, StoredScore, WriteOutcome};
use crate::engine::PartnerState;
use chrono::{Datelike, NaiveDate};
use futures_util::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult, Script, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

const COMMIT: &str = include_str!("commit.lua");
/// The fields a load reads before the offsets of the sources asked for, in this order.
const LOADED_FIELDS: [&str; 4] = ["state", "ver", "fp", "hist"];
/// Room for a number written as a command argument: 20 digits hold any u64 or i64.
const NUMBER_BYTES: usize = 20;
/// Partners named by one index ZADD: a few tens of KB per command, so Redis is never held
/// by one command for long.
const INDEX_CHUNK: usize = 1000;
/// Commands of one call a cluster connection has outstanding at once (each concurrent call
/// has its own window). The cluster client starts a command's response timeout when the
/// command is handed over, so a whole batch handed over at once (thousands of commands,
/// several batches at a time) would spend that timeout queued behind itself in the client,
/// and time out on a busy host though every node answers promptly. A few hundred keep every
/// node busy all the same.
const CLUSTER_COMMANDS_IN_FLIGHT: usize = 256;

/// Moves a due entry: an entry already due (on or before ARGV[1]) is replaced by ARGV[2] (or
/// removed when ARGV[2] is empty); a later entry only moves earlier, so an event written
/// meanwhile cannot be pushed past its own change day.
const RESCHEDULE: &str = r#"
local current = redis.call('ZSCORE', KEYS[1], ARGV[3])
if ARGV[2] == '' then
  if current and tonumber(current) <= tonumber(ARGV[1]) then redis.call('ZREM', KEYS[1], ARGV[3]) end
  return 0
end
if (not current) or tonumber(current) <= tonumber(ARGV[1]) or tonumber(ARGV[2]) < tonumber(current) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
end
return 0
"#;

/// One Redis node, or a Redis Cluster. Every command names at most one partner's keys, and
/// a partner's keys share a hash tag, so any single command lands on one slot. What differs
/// is batching: a single node takes a batch as one pipeline; a cluster pipeline must stay in
/// one slot, so there the batch's commands are sent concurrently over the cluster
/// connection (which multiplexes them per node), a bounded number at a time.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    /// Boxed: a cluster client is several times the size of a connection manager.
    Cluster {
        client: Box<ClusterClient>,
        connection: Arc<OnceCell<ClusterConnection>>,
    },
}

impl Connection {
    /// The cluster connection, made on first use (pcs starts while Redis is down) and kept:
    /// it follows slot moves and reconnects to nodes by itself.
    async fn cluster(
        client: &ClusterClient,
        connection: &OnceCell<ClusterConnection>,
    ) -> RedisResult<ClusterConnection> {
        connection.get_or_try_init(|| client.get_async_connection()).await.cloned()
    }

    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        match self {
            Connection::Single(c) => command.query_async(&mut c.clone()).await,
            Connection::Cluster { client, connection } => {
                command.query_async(&mut Self::cluster(client, connection).await?).await
            }
        }
    }

    /// Runs `commands`, one reply each, in order.
    async fn run(&self, commands: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        match self {
            Connection::Single(c) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(&mut c.clone()).await
            }
            Connection::Cluster { client, connection } => {
                let connection = Self::cluster(client, connection).await?;
                let count = commands.len();
                // Unordered, so that one slow command (a redirect, a node reconnecting) does
                // not hold the window shut while the commands after it have answered.
                let mut answers = futures_util::stream::iter(commands.into_iter().enumerate().map(|(i, command)| {
                    let mut connection = connection.clone();
                    async move { command.query_async::<Value>(&mut connection).await.map(|value| (i, value)) }
                }))
                .buffer_unordered(CLUSTER_COMMANDS_IN_FLIGHT);
                let mut replies = vec![Value::Nil; count];
                while let Some((i, value)) = answers.try_next().await? {
                    replies[i] = value;
                }
                Ok(replies)
            }
        }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: String,
    commit: Script,
    reschedule: Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn day_number(day: NaiveDate) -> i64 {
    i64::from(day.num_days_from_ce())
}

impl RedisStore {
    /// Sets up the connection to one Redis, made on first use and remade after every
    /// failure: pcs starts (not serving) while Redis is down. `timeout` bounds every
    /// command, so callers get an error promptly while Redis is down instead of hanging.
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore::with(Connection::Single(connection), prefix))
    }

    /// Sets up a Redis Cluster connection from seed nodes (any reachable one will do).
    pub fn connect_cluster(nodes: &[String], prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("bad Redis Cluster nodes: {e}")))?;
        Ok(RedisStore::with(
            Connection::Cluster { client: Box::new(client), connection: Arc::new(OnceCell::new()) },
            prefix,
        ))
    }

    fn with(connection: Connection, prefix: &str) -> RedisStore {
        RedisStore {
            connection,
            prefix: prefix.to_owned(),
            commit: Script::new(COMMIT),
            reschedule: Script::new(RESCHEDULE),
        }
    }

    /// Built piece by piece rather than by `format!`: a key and an offset field per partner
    /// read and again per partner written, and the formatter was about 1 % of the benchmark
    /// process's samples under a stream of new partners.
    fn partner_key(&self, partner_id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + partner_id.len() + 3);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(partner_id);
        key.push('}');
        key
    }

    fn partners_key(&self) -> String {
        format!("{}:partners", self.prefix)
    }

    fn due_key(&self) -> String {
        format!("{}:due", self.prefix)
    }

    fn unpublished_key(&self) -> String {
        format!("{}:unpublished", self.prefix)
    }

    /// A command per `INDEX_CHUNK` of `partners`, all in one round trip.
    async fn run_chunked(&self, partners: &[String], command: impl Fn(&[String]) -> Cmd) -> Result<(), StoreError> {
        if partners.is_empty() {
            return Ok(());
        }
        let commands = partners.chunks(INDEX_CHUNK).map(command).collect();
        self.connection.run(commands).await.map(drop).map_err(unavailable)
    }

    fn offset_field(source: &SourcePartition) -> String {
        let mut partition = itoa::Buffer::new();
        let partition = partition.format(source.partition);
        let mut field = String::with_capacity(source.topic.len() + partition.len() + 3);
        field.push_str("o:");
        field.push_str(&source.topic);
        field.push(':');
        field.push_str(partition);
        field
    }

    /// A call of `script` on one key, with room for `more_args` arguments of `more_bytes` in
    /// all after the key. One node runs it by hash (loaded on demand, see
    /// `run_with_scripts`); a cluster gets the source with it, as each shard must know it and
    /// no single load reaches them all.
    fn script_call(&self, script: &Script, source: &str, key: String, more_args: usize, more_bytes: usize) -> Cmd {
        let (name, body) = match self.connection {
            Connection::Single(_) => ("EVALSHA", script.get_hash()),
            Connection::Cluster { .. } => ("EVAL", source),
        };
        // Sized up front: a commit carries a partner's whole state and score, and a command
        // grown argument by argument copied them again at every doubling.
        let mut command = Cmd::with_capacity(4 + more_args, name.len() + body.len() + 1 + key.len() + more_bytes);
        command.arg(name).arg(body).arg(1).arg(key);
        command
    }

    /// The first `limit` members of a sorted set between `min` and `max`.
    async fn range(
        &self,
        command: &str,
        key: String,
        min: String,
        max: String,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd(command);
        cmd.arg(key).arg(min).arg(max).arg("LIMIT").arg(0).arg(limit);
        self.connection.query(&cmd).await.map_err(unavailable)
    }

    /// The index updates of `writes`. One ZADD names many partners: a command per partner
    /// per index cost Redis and the client more than the partner writes themselves.
    fn index_commands(&self, writes: &[PartnerWrite]) -> Vec<Cmd> {
        let mut commands = Vec::with_capacity(2 * writes.len().div_ceil(INDEX_CHUNK));
        for chunk in writes.chunks(INDEX_CHUNK) {
            let mut listed = redis::cmd("ZADD");
            listed.arg(self.partners_key()).arg("NX");
            for w in chunk {
                listed.arg(0).arg(&w.partner_id);
            }
            commands.push(listed);
            let mut due = redis::cmd("ZADD");
            due.arg(self.due_key()).arg("LT");
            let mut any = false;
            for w in chunk {
                if let Some(next) = w.next_change {
                    due.arg(day_number(next)).arg(&w.partner_id);
                    any = true;
                }
            }
            if any {
                commands.push(due);
            }
        }
        commands
    }

    /// The conditional commit of one partner's write (see `commit.lua`).
    fn commit_command(&self, w: &PartnerWrite) -> Cmd {
        let offset_fields: Vec<String> = w.offsets.iter().map(|(source, _)| Self::offset_field(source)).collect();
        let history = w.history.as_deref().unwrap_or_default();
        let score = pack(&w.score);
        let bytes = 2 * NUMBER_BYTES
            + w.state.len()
            + score.len()
            + history.len()
            + offset_fields.iter().map(|f| f.len() + NUMBER_BYTES).sum::<usize>();
        let key = self.partner_key(&w.partner_id);
        let mut commit = self.script_call(&self.commit, COMMIT, key, 5 + 2 * w.offsets.len(), bytes);
        commit.arg(w.expected_version).arg(&w.state).arg(&*score).arg(w.score_fingerprint).arg(history);
        for (field, (_, offset)) in offset_fields.into_iter().zip(&w.offsets) {
            commit.arg(field).arg(*offset);
        }
        commit
    }

    /// Runs commands that may call scripts by hash, loading the scripts first if Redis lost
    /// them (after a restart or SCRIPT FLUSH). Every such command is safe to repeat.
    async fn run_with_scripts(&self, commands: impl Fn() -> Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        // The commands are built again for the retry rather than cloned up front: a batch's
        // writes carry every partner's state and score, and copying them all on every call,
        // for a retry needed once per Redis restart, showed in ingest's profile.
        match self.connection.run(commands()).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                if let Connection::Single(c) = &self.connection {
                    for script in [&self.commit, &self.reschedule] {
                        script.prepare_invoke().load_async(&mut c.clone()).await.map_err(unavailable)?;
                    }
                }
                self.connection.run(commands()).await.map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

fn number<T: std::str::FromStr>(value: &Value) -> Option<T> {
    bytes(value).and_then(|b| std::str::from_utf8(b).ok()).and_then(|s| s.parse().ok())
}

impl StateStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.connection.query::<String>(&redis::cmd("PING")).await.map(drop).map_err(unavailable)
    }

    async fn load(&self, partners: &[(String, Vec<SourcePartition>)]) -> Result<Vec<StoredPartner>, StoreError> {
        let commands = partners
            .iter()
            .map(|(partner_id, sources)| {
                let fields: Vec<String> = sources.iter().map(Self::offset_field).collect();
                let key = self.partner_key(partner_id);
                let bytes = "HMGET".len()
                    + key.len()
                    + LOADED_FIELDS.iter().map(|f| f.len()).sum::<usize>()
                    + fields.iter().map(String::len).sum::<usize>();
                let mut cmd = Cmd::with_capacity(2 + LOADED_FIELDS.len() + fields.len(), bytes);
                cmd.arg("HMGET").arg(key).arg(&LOADED_FIELDS[..]).arg(fields);
                cmd
            })
            .collect();
        let rows = self.connection.run(commands).await.map_err(unavailable)?;
        partners
            .iter()
            .zip(rows)
            .map(|((partner_id, sources), row)| {
                let row = match row {
                    Value::Array(row) if row.len() == LOADED_FIELDS.len() + sources.len() => row,
                    other => return Err(StoreError::Protocol(format!("HMGET returned {other:?}"))),
                };
                let state = match bytes(&row[0]) {
                    Some(b) => PartnerState::decode(b)
                        .map_err(|source| StoreError::CorruptState { partner_id: partner_id.clone(), source })?,
                    None => PartnerState::default(),
                };
                Ok(StoredPartner {
                    state,
                    history: StoredPartner::decode_history(partner_id, bytes(&row[3]))?,
                    version: number(&row[1]).unwrap_or(0),
                    score_fingerprint: number(&row[2]),
                    offsets: row[LOADED_FIELDS.len()..].iter().map(number).collect(),
                })
            })
            .collect()
    }

    async fn write(&self, writes: &[PartnerWrite]) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // The indexes go first, in a round trip of their own: if a partner write then fails,
        // an index names a partner too early (harmless: listing skips it, a rollover
        // re-evaluates it), never too late. On a cluster the index keys live on other nodes
        // than the partners', so commands sent together would run there in any order.
        self.connection.run(self.index_commands(writes)).await.map_err(unavailable)?;
        let commits = self.run_with_scripts(|| writes.iter().map(|w| self.commit_command(w)).collect()).await?;
        if commits.len() != writes.len() {
            return Err(StoreError::Protocol(format!("{} results for {} writes", commits.len(), writes.len())));
        }
        commits
            .iter()
            .map(|result| match result {
                Value::Int(-1) => Ok(WriteOutcome::Conflict),
                Value::Int(version) if *version > 0 => Ok(WriteOutcome::Written { version: *version as u64 }),
                other => Err(StoreError::Protocol(format!("commit script returned {other:?}"))),
            })
            .collect()
    }

    async fn scores(&self, partners: &[String]) -> Result<Vec<Option<StoredScore>>, StoreError> {
        let commands = partners
            .iter()
            .map(|partner_id| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(self.partner_key(partner_id)).arg("score").arg("ver").arg("hist");
                cmd
            })
            .collect();
        let rows = self.connection.run(commands).await.map_err(unavailable)?;
        Ok(partners
            .iter()
            .zip(&rows)
            .map(|(partner_id, row)| {
                let Value::Array(row) = row else { return None };
                let stored = row.first().and_then(bytes)?;
                // A score that does not decompress is handed on as stored: it is not a score
                // either way (a protobuf message never starts with the zero byte it does), so
                // its reader refuses it for this partner alone, as any unreadable score.
                let score = unpack(stored).unwrap_or_else(|reason| {
                    tracing::warn!(partner_id = %partner_id, %reason, "unreadable stored score");
                    stored.into()
                });
                Some(StoredScore {
                    score: score.into_owned(),
                    version: row.get(1).and_then(number).unwrap_or(0),
                    history: row.get(2).and_then(bytes).map(<[u8]>::to_vec),
                })
            })
            .collect())
    }

    async fn list_partners(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let start = if after.is_empty() { "-".to_owned() } else { format!("({after}") };
        self.range("ZRANGEBYLEX", self.partners_key(), start, "+".to_owned(), limit).await
    }

    async fn due(&self, day: NaiveDate, limit: usize) -> Result<Vec<String>, StoreError> {
        self.range("ZRANGEBYSCORE", self.due_key(), "-inf".to_owned(), day_number(day).to_string(), limit).await
    }

    async fn reschedule(&self, today: NaiveDate, changes: &[(String, Option<NaiveDate>)]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let commands = || {
            changes
                .iter()
                .map(|(partner_id, next_change)| {
                    let mut cmd = self.script_call(
                        &self.reschedule,
                        RESCHEDULE,
                        self.due_key(),
                        3,
                        2 * NUMBER_BYTES + partner_id.len(),
                    );
                    cmd.arg(day_number(today))
                        .arg(next_change.map(|d| day_number(d).to_string()).unwrap_or_default())
                        .arg(partner_id);
                    cmd
                })
                .collect()
        };
        self.run_with_scripts(commands).await.map(drop)
    }

    async fn note_unpublished(&self, partners: &[String], noted_at: i64) -> Result<(), StoreError> {
        let key = self.unpublished_key();
        self.run_chunked(partners, |chunk| {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key);
            for partner_id in chunk {
                cmd.arg(noted_at).arg(partner_id);
            }
            cmd
        })
        .await
    }

    async fn unpublished(&self, noted_before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.range("ZRANGEBYSCORE", self.unpublished_key(), "-inf".to_owned(), noted_before.to_string(), limit).await
    }

    async fn forget_published(&self, partners: &[String]) -> Result<(), StoreError> {
        let key = self.unpublished_key();
        self.run_chunked(partners, |chunk| {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&key).arg(chunk);
            cmd
        })
        .await
    }
}
