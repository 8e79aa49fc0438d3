//! `SentinelPool`: the sentinel-aware pool for Node, with ioredis-shaped replies.

use std::sync::Arc;
use std::time::Duration;

use ferry::SentinelPoolOptions;
use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;

use crate::error::{self, Code};
use crate::js::{PipelineReplies, Reply};

/// A sentinel's address.
#[napi(object)]
pub struct SentinelAddress {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u32,
}

/// Options of `SentinelPool.connect`, named as in ioredis where ioredis has the option, and as JedisSentinelPool
/// where the option is a pool knob.
#[napi(object)]
pub struct SentinelPoolConfig {
    /// The name the sentinels monitor the master under (ioredis `name`).
    pub name: String,
    /// Seed sentinels, asked in this order.
    pub sentinels: Vec<SentinelAddress>,
    /// ACL user of the data nodes.
    pub username: Option<String>,
    /// Password of the data nodes.
    pub password: Option<String>,
    /// ACL user of the sentinels.
    pub sentinel_username: Option<String>,
    /// Password of the sentinels.
    pub sentinel_password: Option<String>,
    /// Database selected on every data connection.
    pub db: Option<u32>,
    /// Most connections at once (default 8).
    pub max_total: Option<u32>,
    /// Most idle connections kept (default 8).
    pub max_idle: Option<u32>,
    /// Idle connections kept ready (default 0).
    pub min_idle: Option<u32>,
    /// Longest wait for a free connection, in ms (default: forever).
    pub max_wait_ms: Option<u32>,
    /// How long a borrow waits for a master during a failover, in ms (default 10000).
    pub resolve_timeout_ms: Option<u32>,
    /// Safety-net poll of the sentinels, in ms (default 2000).
    pub poll_interval_ms: Option<u32>,
}

fn options(c: SentinelPoolConfig) -> napi::Result<SentinelPoolOptions> {
    let sentinels = c.sentinels.into_iter().map(|s| {
        u16::try_from(s.port)
            .map(|p| (s.host.clone(), p))
            .map_err(|_| {
                error::coded(
                    Code::Config,
                    format!("sentinel port {} is not a port", s.port),
                )
            })
    });
    let sentinels = sentinels.collect::<napi::Result<Vec<_>>>()?;
    let mut o = SentinelPoolOptions::new(c.name, sentinels);
    if let Some(p) = &c.password {
        o = o.data_auth(c.username.as_deref(), p);
    }
    if let Some(p) = &c.sentinel_password {
        o = o.sentinel_auth(c.sentinel_username.as_deref(), p);
    }
    if let Some(db) = c.db {
        o.data_connect.db = i64::from(db);
    }
    if let Some(n) = c.max_total {
        o = o.max_total(n as usize);
    }
    if let Some(n) = c.max_idle {
        o = o.max_idle(n as usize);
    }
    if let Some(n) = c.min_idle {
        o = o.min_idle(n as usize);
    }
    if let Some(ms) = c.max_wait_ms {
        o = o.max_wait(Some(Duration::from_millis(u64::from(ms))));
    }
    if let Some(ms) = c.resolve_timeout_ms {
        o = o.resolve_timeout(Duration::from_millis(u64::from(ms)));
    }
    if let Some(ms) = c.poll_interval_ms {
        o = o.poll_interval(Duration::from_millis(u64::from(ms)));
    }
    Ok(o)
}

/// One command argument: a string or a Buffer (numbers are turned into strings by the JS layer).
type Arg = Either<String, Buffer>;

fn argv(args: Vec<Arg>) -> napi::Result<Vec<Vec<u8>>> {
    if args.is_empty() {
        return Err(error::coded(
            Code::Config,
            "a command needs at least its name",
        ));
    }
    Ok(args
        .into_iter()
        .map(|a| match a {
            Either::A(s) => s.into_bytes(),
            Either::B(b) => b.to_vec(),
        })
        .collect())
}

/// A connection pool to the master of a Sentinel-managed group that follows failovers and never writes to a
/// demoted master.
#[napi]
pub struct SentinelPool {
    pool: Arc<ferry::SentinelPool>,
}

#[napi]
impl SentinelPool {
    /// Asks the sentinels for the master, confirms it with ROLE and starts following it.
    #[napi(factory)]
    pub async fn connect(config: SentinelPoolConfig) -> napi::Result<SentinelPool> {
        let pool = ferry::SentinelPool::new(options(config)?)
            .await
            .map_err(error::sentinel)?;
        Ok(SentinelPool {
            pool: Arc::new(pool),
        })
    }

    /// Runs one command on the master. Replies as ioredis's `call`: strings, numbers, `null`, arrays.
    #[napi(
        ts_args_type = "args: Array<string | Buffer>, buffers?: boolean | undefined | null",
        ts_return_type = "Promise<unknown>"
    )]
    pub async fn call(&self, args: Vec<Arg>, buffers: Option<bool>) -> napi::Result<Reply> {
        let argv = argv(args)?;
        let frame = self.pool.call(&argv).await.map_err(error::sentinel)?;
        Ok(Reply {
            frame,
            buffers: buffers.unwrap_or(false),
        })
    }

    /// Sends several commands on one connection and reads every reply, as `[error, result]` pairs.
    #[napi(
        ts_args_type = "commands: Array<Array<string | Buffer>>, buffers?: boolean | undefined | null",
        ts_return_type = "Promise<Array<[Error | null, unknown]>>"
    )]
    pub async fn pipeline(
        &self,
        commands: Vec<Vec<Arg>>,
        buffers: Option<bool>,
    ) -> napi::Result<PipelineReplies> {
        let cmds = commands
            .into_iter()
            .map(argv)
            .collect::<napi::Result<Vec<_>>>()?;
        let mut conn = self.pool.get().await.map_err(error::sentinel)?;
        let frames = conn.pipeline(&cmds).await.map_err(error::sentinel)?;
        Ok(PipelineReplies {
            frames,
            buffers: buffers.unwrap_or(false),
        })
    }

    /// `host:port` of the master the pool writes to now, if one is known.
    #[napi(getter)]
    pub fn master(&self) -> Option<String> {
        self.pool.master_addr().map(|a| a.to_string())
    }

    /// The master generation: it grows by one at each failover the pool followed.
    #[napi(getter)]
    pub fn generation(&self) -> f64 {
        self.pool.generation() as f64
    }

    /// Stops the sentinel listeners and closes every connection; later calls reject with `FERRY_STOPPED`.
    #[napi]
    pub fn close(&self) {
        self.pool.close();
    }
}
