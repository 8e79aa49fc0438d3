//! The state record of a pair: what it holds, how it is written (one compare-and-set script), and its phases.

use serde::{Deserialize, Serialize};

use super::{Direction, RecoverOutcome, Side};

/// Where a pair is in the walk-through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DrPhase {
    /// No record yet: call `init`.
    Uninitialized,
    /// A serves; A -> B runs.
    Normal,
    /// B serves; nothing runs until `recover`.
    FailedOver,
    /// B serves; B -> A runs until `switchback`.
    Recovering,
}

impl DrPhase {
    /// The serde name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DrPhase::Uninitialized => "uninitialized",
            DrPhase::Normal => "normal",
            DrPhase::FailedOver => "failed_over",
            DrPhase::Recovering => "recovering",
        }
    }

    /// The side that takes writes in this phase.
    pub fn primary(&self) -> Side {
        match self {
            DrPhase::Uninitialized | DrPhase::Normal => Side::A,
            DrPhase::FailedOver | DrPhase::Recovering => Side::B,
        }
    }

    /// The job that runs in this phase.
    pub fn direction(&self) -> Option<Direction> {
        match self {
            DrPhase::Normal => Some(Direction::AToB),
            DrPhase::Recovering => Some(Direction::BToA),
            DrPhase::Uninitialized | DrPhase::FailedOver => None,
        }
    }
}

impl std::fmt::Display for DrPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position in a server's replication stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplPosition {
    /// The replication id.
    pub replid: String,
    /// The offset.
    pub offset: u64,
}

impl std::fmt::Display for ReplPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.replid, self.offset)
    }
}

/// A position in the stream of one shard (one master) of a side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardPosition {
    /// The shard: the checkpoint key it was read from (failover), or the master's node id (switchback).
    pub shard: String,
    /// The replication id.
    pub replid: String,
    /// The offset.
    pub offset: u64,
}

impl ShardPosition {
    /// The replication id and offset.
    pub fn position(&self) -> ReplPosition {
        ReplPosition {
            replid: self.replid.clone(),
            offset: self.offset,
        }
    }
}

/// The state record of a pair (stored as JSON in `ferry:state:{dr-<name>}` on both sides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DrState {
    /// Raised by every transition; a record is only replaced by one with a higher epoch.
    pub epoch: u64,
    /// The phase.
    pub phase: DrPhase,
    /// At the failover: the last position of A's stream that B had applied (the RPO).
    #[serde(default)]
    pub rpo: Option<ReplPosition>,
    /// At the failover: every A -> B checkpoint B held (one per A shard for a cluster A).
    #[serde(default)]
    pub rpo_shards: Vec<ShardPosition>,
    /// At the failover of a cluster B: every B master's position (shard: its node id), where each B shard's
    /// B -> A stream continues from.
    #[serde(default)]
    pub b_positions: Vec<ShardPosition>,
    /// At the failover: B's own position (where B -> A continues from).
    #[serde(default)]
    pub b_position: Option<ReplPosition>,
    /// At the switchback: A's position when B was paused and drained (where A -> B continues from).
    #[serde(default)]
    pub a_seed: Option<ReplPosition>,
    /// At the switchback of a cluster A: every master's position (where each shard's A -> B continues from).
    #[serde(default)]
    pub a_seeds: Vec<ShardPosition>,
    /// How the last recover started B -> A.
    #[serde(default)]
    pub recover_mode: Option<RecoverOutcome>,
    /// Writes A had beyond the RPO when recover looked.
    #[serde(default)]
    pub extra_writes_on_a: Option<u64>,
    /// The write pause of the last switchback, in milliseconds.
    #[serde(default)]
    pub switchback_pause_ms: Option<u64>,
    /// At the switchback: every B master's position once A had applied it (B paused), where B's stream stood
    /// when A took over.
    #[serde(default)]
    pub b_drained: Vec<ShardPosition>,
    /// Writes B accepted after A took over, counted in B's stream by the call that finished a switchback another
    /// call left half done (it died after moving A's record and before disconnecting B's clients, and B's pause
    /// ran out first): acknowledged writes that A does not have. 0 when B was fenced after the switch (it
    /// refused them); more only where the fence could not be set. `None`: not counted (no interrupted switch).
    #[serde(default)]
    pub writes_on_b_after_switch: Option<u64>,
    /// When this record was written (Unix milliseconds, the writer's clock).
    #[serde(default)]
    pub written_at_ms: u64,
    /// One line per finished cycle, for humans.
    #[serde(default)]
    pub history: Vec<String>,
}

/// The crate's name for the record it reads and writes.
pub(crate) type Record = DrState;

impl DrState {
    /// A record of `epoch` in `phase`, nothing else recorded.
    pub(crate) fn new(epoch: u64, phase: DrPhase) -> DrState {
        DrState {
            epoch,
            phase,
            rpo: None,
            rpo_shards: Vec::new(),
            b_position: None,
            b_positions: Vec::new(),
            a_seed: None,
            a_seeds: Vec::new(),
            recover_mode: None,
            extra_writes_on_a: None,
            switchback_pause_ms: None,
            b_drained: Vec::new(),
            writes_on_b_after_switch: None,
            written_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            history: Vec::new(),
        }
    }

    /// The public view (the same record).
    pub(crate) fn public(&self) -> DrState {
        self.clone()
    }

    /// The JSON the transition script stores, with the named fields replaced by placeholders the script fills in.
    pub(crate) fn template(&self, fill: &Fill) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut v {
            if fill.rpo {
                map.insert("rpo".into(), RPO_PLACEHOLDER.into());
                map.insert("rpo_shards".into(), RPO_SHARDS_PLACEHOLDER.into());
            }
            if let Some(field) = fill.position {
                map.insert(field.into(), POS_PLACEHOLDER.into());
            }
        }
        serde_json::to_string(&v).unwrap_or_default()
    }
}

const RPO_PLACEHOLDER: &str = "__RPO__";
const POS_PLACEHOLDER: &str = "__POS__";
const RPO_SHARDS_PLACEHOLDER: &str = "__RPOS__";

/// What the transition script fills in and does besides writing the record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fill {
    /// `rpo` from the old value of the first checkpoint key and `rpo_shards` from all of them (before they are
    /// replaced).
    pub rpo: bool,
    /// This field from the node's own `master_replid` / `master_repl_offset` at that instant.
    pub position: Option<&'static str>,
    /// `FLUSHALL` before writing the keys (a full copy follows).
    pub flush: bool,
}

/// The transition script. `KEYS[1]`: the record; `KEYS[2..]`: checkpoint keys. `ARGV`: the new epoch, the record
/// template, `1` to fill `rpo`, `1` to fill the position, `1` to flush, then a value per checkpoint key (`""`
/// deletes it). Writes nothing and returns `{0, stored}` unless the stored epoch is lower; else returns `{1, record}`.
/// The checkpoint values and the record are written in this one script, so a job's fence and the record that
/// explains it can never be seen apart.
pub(crate) const TRANSITION_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local e = tonumber(string.match(cur, '"epoch":(%d+)')) or 0
  if e >= tonumber(ARGV[1]) then return {0, cur} end
end
local json = ARGV[2]
local function pos(r, o) return '{"replid":"' .. r .. '","offset":' .. o .. '}' end
if ARGV[3] == '1' then
  local rpo, shards = 'null', {}
  for i = 2, #KEYS do
    local old = redis.call('GET', KEYS[i])
    if old then
      local r, o = string.match(old, '^v2 (%x+) (%d+) ')
      if not r then r, o = string.match(old, '^(%x+) (%d+)$') end
      if r then
        if rpo == 'null' then rpo = pos(r, o) end
        shards[#shards + 1] = '{"shard":"' .. KEYS[i] .. '","replid":"' .. r .. '","offset":' .. o .. '}'
      end
    end
  end
  json = string.gsub(json, '"__RPO__"', rpo)
  json = string.gsub(json, '"__RPOS__"', '[' .. table.concat(shards, ',') .. ']')
end
if ARGV[4] == '1' then
  local info = redis.call('INFO', 'replication')
  local r = string.match(info, 'master_replid:(%x+)')
  local o = string.match(info, 'master_repl_offset:(%d+)')
  json = string.gsub(json, '"__POS__"', pos(r, o))
end
if ARGV[5] == '1' then redis.call('FLUSHALL') end
for i = 2, #KEYS do
  local v = ARGV[i + 4]
  if v == '' then redis.call('DEL', KEYS[i]) else redis.call('SET', KEYS[i], v) end
end
redis.call('SET', KEYS[1], json)
return {1, json}
"#;

/// The record key of pair `name`.
pub(crate) fn key(name: &str) -> String {
    format!("ferry:state:{{dr-{name}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_puts_placeholders_the_script_replaces() {
        let r = DrState::new(3, DrPhase::FailedOver);
        let t = r.template(&Fill {
            rpo: true,
            position: Some("b_position"),
            flush: false,
        });
        assert!(t.contains(r#""rpo":"__RPO__""#), "{t}");
        assert!(t.contains(r#""b_position":"__POS__""#), "{t}");
        assert!(
            t.contains(r#""epoch":3"#),
            "the script reads the epoch: {t}"
        );
        assert!(t.contains(r#""rpo_shards":"__RPOS__""#), "{t}");
        let filled = t
            .replace(r#""__RPO__""#, r#"{"replid":"ab","offset":5}"#)
            .replace(
                r#""__RPOS__""#,
                r#"[{"shard":"k","replid":"ab","offset":5}]"#,
            )
            .replace(r#""__POS__""#, "null");
        let back: DrState = serde_json::from_str(&filled).unwrap();
        assert_eq!(back.rpo.unwrap().offset, 5);
        assert_eq!(back.rpo_shards[0].shard, "k");
        assert_eq!(back.phase, DrPhase::FailedOver);
    }

    #[test]
    fn key_is_reserved_and_hash_tagged() {
        let k = key("orders");
        assert_eq!(k, "ferry:state:{dr-orders}");
        assert!(ferry_replicator::is_reserved_key(k.as_bytes()));
    }
}
