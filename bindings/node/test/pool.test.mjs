// SentinelPool through a SENTINEL FAILOVER, and replies shaped as ioredis's (ESM).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { SentinelPool, ReplyError, FerryError } from 'redis-ferry'
import { startServers, client, eventually } from './helpers.mjs'

let group, sentinels

before(async () => {
  group = await startServers('sentinel')
  sentinels = group.sentinels.map((a) => {
    const [host, port] = a.split(':')
    return { host, port: Number(port) }
  })
})

after(async () => {
  await group?.stop()
})

test('call and pipeline reply as ioredis does', async () => {
  const pool = await SentinelPool.connect({ name: group.master_name, sentinels })
  const io = client(group.master)
  try {
    assert.equal(pool.master, group.master)
    const writes = [
      [['SET', 'shape:s', 'héllo'], 'OK'],
      [['INCRBY', 'shape:n', 41], 41],
      [['RPUSH', 'shape:l', 'a', 'b', Buffer.from([0xff, 0x00])], 3],
      [['HSET', 'shape:h', 'f', 'v'], 1],
      [['ZADD', 'shape:z', '1.5', 'm'], 1],
    ]
    for (const [c, want] of writes) assert.deepEqual(await pool.call(...c), want, c.join(' '))
    const reads = [
      ['GET', 'shape:s'],
      ['GET', 'shape:missing'],
      ['LRANGE', 'shape:l', 0, -1],
      ['HGETALL', 'shape:h'],
      ['ZRANGE', 'shape:z', 0, -1, 'WITHSCORES'],
      ['MGET', 'shape:s', 'shape:missing', 'shape:n'],
      ['PING'],
    ]
    for (const c of reads) assert.deepEqual(await pool.call(...c), await io.call(...c), c.join(' '))
    assert.deepEqual(await pool.callBuffer('GET', 'shape:s'), await io.callBuffer('GET', 'shape:s'))
    assert.equal(await pool.call('INCR', 'shape:n'), 42)

    const ours = await pool.pipeline().set('shape:p', '1').incr('shape:p').call('GET', 'shape:p').hset('shape:s', 'x', 'y').exec()
    const theirs = await io.pipeline().set('shape:p', '1').incr('shape:p').call('GET', 'shape:p').hset('shape:s', 'x', 'y').exec()
    assert.equal(ours.length, 4)
    assert.deepEqual(ours.slice(0, 3), theirs.slice(0, 3))
    assert.equal(ours[3][1], null)
    assert.match(ours[3][0].message, /^WRONGTYPE/)
    assert.match(theirs[3][0].message, /^WRONGTYPE/)
    assert.equal(ours[3][0].name, 'ReplyError')
    assert.ok(ours[3][0] instanceof ReplyError && ours[3][0] instanceof FerryError)
    assert.equal(ours[3][0].code, 'FERRY_REPLY')
    assert.equal(ours[3][0].replyCode, 'WRONGTYPE')

    assert.deepEqual(await pool.pipeline([['SET', 'shape:q', 'v'], ['GET', 'shape:q']]).exec(), [[null, 'OK'], [null, 'v']])
    await assert.rejects(pool.call('HSET', 'shape:s', 'f', 'v'), (err) => {
      assert.ok(err instanceof ReplyError && err instanceof FerryError, String(err))
      assert.equal(err.code, 'FERRY_REPLY')
      assert.equal(err.replyCode, 'WRONGTYPE')
      assert.match(err.message, /^WRONGTYPE Operation against a key holding the wrong kind of value/)
      return true
    })
    await assert.rejects(pool.call('NO-SUCH-COMMAND'), { name: 'ReplyError', code: 'FERRY_REPLY', replyCode: 'ERR' })
  } finally {
    io.disconnect()
    await pool.close()
  }
})

test('a command the user may not run rejects FERRY_AUTH, not a ReplyError', async () => {
  const io = client(group.master)
  await io.call('ACL', 'SETUSER', 'noget', 'on', '>pw', '~*', '&*', '+@all', '-get')
  const pool = await SentinelPool.connect({ name: group.master_name, sentinels, username: 'noget', password: 'pw' })
  try {
    assert.equal(await pool.call('SET', 'perm:k', 'v'), 'OK')
    await assert.rejects(pool.call('GET', 'perm:k'), (err) => {
      assert.ok(err instanceof FerryError && !(err instanceof ReplyError), String(err))
      assert.equal(err.code, 'FERRY_AUTH')
      assert.match(err.message, /NOPERM/)
      return true
    })
  } finally {
    io.disconnect()
    await pool.close()
  }
})

test('through a SENTINEL FAILOVER the pool follows the new master and loses no acknowledged write', async () => {
  const pool = await SentinelPool.connect({ name: group.master_name, sentinels, resolveTimeoutMs: 30_000 })
  const old = pool.master
  const replicas = group.replicas.length
  const acked = []
  const confirmed = []
  let failures = 0
  let running = true
  let n = 0
  const writers = Array.from({ length: 4 }, async () => {
    while (running) {
      const i = n++
      try {
        const r = await pool.pipeline().set(`fo:${i}`, String(i)).call('WAIT', replicas, 100).exec()
        if (r[0][0] === null && r[0][1] === 'OK') {
          acked.push(i)
          if (r[1][1] === replicas) confirmed.push(i)
        } else {
          failures++
        }
      } catch {
        failures++
      }
    }
  })
  await eventually('writes before the failover', () => acked.length >= 100)
  const [host, port] = group.sentinels[0].split(':')
  const sentinel = client(`${host}:${port}`)
  try {
    assert.equal(await sentinel.call('SENTINEL', 'FAILOVER', group.master_name), 'OK')
  } finally {
    sentinel.disconnect()
  }
  await eventually('the pool to follow the new master', () => pool.master !== old && pool.generation > 0)
  const switched = acked.length
  await eventually('writes on the new master', () => acked.length >= switched + 100)
  running = false
  await Promise.all(writers)

  const master = client(pool.master)
  try {
    const values = await master.mget(acked.map((i) => `fo:${i}`))
    const lost = acked.filter((i, at) => values[at] !== String(i))
    assert.deepEqual(lost, [], `${lost.length} of ${acked.length} acknowledged writes lost (${confirmed.length} confirmed by WAIT, ${failures} failed)`)
  } finally {
    master.disconnect()
    await pool.close()
  }
  await assert.rejects(pool.call('PING'), { code: 'FERRY_STOPPED' })
})
