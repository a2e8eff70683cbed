//! The Redis store. One hash per partner (`<prefix>:{<partner_id>}`), plus two index keys
//! that are never touched together with a partner key: `<prefix>:partners` (ids, for
//! listing) and `<prefix>:due` (the day each partner's score next changes by itself).

use super::{PartnerWrite, SourcePartition, StateStore, StoreError, StoredPartner, StoredScore, WriteOutcome};
use crate::engine::PartnerState;
use chrono::{Datelike, NaiveDate};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Script, Value};
use std::time::Duration;

const COMMIT: &str = include_str!("commit.lua");

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

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
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
    /// Sets up the connection, which is made on first use and remade after every failure:
    /// pcs starts (not serving) while Redis is down. `timeout` bounds every command, so
    /// callers get an error promptly while Redis is down instead of hanging.
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore {
            connection,
            prefix: prefix.to_owned(),
            commit: Script::new(COMMIT),
            reschedule: Script::new(RESCHEDULE),
        })
    }

    fn partner_key(&self, partner_id: &str) -> String {
        format!("{}:{{{partner_id}}}", self.prefix)
    }

    fn partners_key(&self) -> String {
        format!("{}:partners", self.prefix)
    }

    fn due_key(&self) -> String {
        format!("{}:due", self.prefix)
    }

    fn offset_field(source: &SourcePartition) -> String {
        format!("o:{}:{}", source.topic, source.partition)
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
        let mut connection = self.connection.clone();
        redis::cmd(command)
            .arg(key)
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Runs a pipeline that calls scripts by hash, loading them first if Redis lost them
    /// (after a restart or SCRIPT FLUSH). Every command in these pipelines is safe to repeat.
    async fn query_with_scripts(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut connection = self.connection.clone();
        match pipe.query_async(&mut connection).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                for script in [&self.commit, &self.reschedule] {
                    script.prepare_invoke().load_async(&mut connection).await.map_err(unavailable)?;
                }
                pipe.query_async(&mut connection).await.map_err(unavailable)
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
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop).map_err(unavailable)
    }

    async fn load(&self, partners: &[(String, Vec<SourcePartition>)]) -> Result<Vec<StoredPartner>, StoreError> {
        let mut pipe = redis::pipe();
        for (partner_id, sources) in partners {
            let cmd = pipe.cmd("HMGET").arg(self.partner_key(partner_id)).arg("state").arg("ver").arg("fp");
            for source in sources {
                cmd.arg(Self::offset_field(source));
            }
        }
        let mut connection = self.connection.clone();
        let rows: Vec<Vec<Value>> = pipe.query_async(&mut connection).await.map_err(unavailable)?;
        partners
            .iter()
            .zip(rows)
            .map(|((partner_id, sources), row)| {
                if row.len() != 3 + sources.len() {
                    return Err(StoreError::Protocol(format!("HMGET returned {} fields", row.len())));
                }
                let state = match bytes(&row[0]) {
                    Some(b) => PartnerState::decode(b)
                        .map_err(|source| StoreError::CorruptState { partner_id: partner_id.clone(), source })?,
                    None => PartnerState::default(),
                };
                Ok(StoredPartner {
                    state,
                    version: number(&row[1]).unwrap_or(0),
                    score_fingerprint: number(&row[2]),
                    offsets: row[3..].iter().map(number).collect(),
                })
            })
            .collect()
    }

    async fn write(&self, writes: &[PartnerWrite]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut pipe = redis::pipe();
        for w in writes {
            // The indexes go first: if the partner write then fails, an index names a
            // partner too early (harmless: listing skips it, a rollover re-evaluates it),
            // never too late.
            pipe.cmd("ZADD").arg(self.partners_key()).arg("NX").arg(0).arg(&w.partner_id).ignore();
            if let Some(next) = w.next_change {
                pipe.cmd("ZADD").arg(self.due_key()).arg("LT").arg(day_number(next)).arg(&w.partner_id).ignore();
            }
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.commit.get_hash())
                .arg(1)
                .arg(self.partner_key(&w.partner_id))
                .arg(w.expected_version)
                .arg(&w.state)
                .arg(&w.score)
                .arg(w.score_fingerprint.to_string());
            for (source, offset) in &w.offsets {
                cmd.arg(Self::offset_field(source)).arg(*offset);
            }
        }
        let results = self.query_with_scripts(&pipe).await?;
        if results.len() != writes.len() {
            return Err(StoreError::Protocol(format!("{} script results for {} writes", results.len(), writes.len())));
        }
        results
            .iter()
            .map(|v| match v {
                Value::Int(-1) => Ok(WriteOutcome::Conflict),
                Value::Int(version) if *version > 0 => Ok(WriteOutcome::Written { version: *version as u64 }),
                other => Err(StoreError::Protocol(format!("commit script returned {other:?}"))),
            })
            .collect()
    }

    async fn scores(&self, partners: &[String]) -> Result<Vec<Option<StoredScore>>, StoreError> {
        let mut pipe = redis::pipe();
        for partner_id in partners {
            pipe.cmd("HMGET").arg(self.partner_key(partner_id)).arg("score").arg("ver");
        }
        let mut connection = self.connection.clone();
        let rows: Vec<Vec<Value>> = pipe.query_async(&mut connection).await.map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| {
                let score = row.first().and_then(bytes)?;
                Some(StoredScore { score: score.to_vec(), version: row.get(1).and_then(number).unwrap_or(0) })
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
        let mut pipe = redis::pipe();
        for (partner_id, next_change) in changes {
            pipe.cmd("EVALSHA")
                .arg(self.reschedule.get_hash())
                .arg(1)
                .arg(self.due_key())
                .arg(day_number(today))
                .arg(next_change.map(|d| day_number(d).to_string()).unwrap_or_default())
                .arg(partner_id)
                .ignore();
        }
        self.query_with_scripts(&pipe).await.map(drop)
    }
}
