// rdb.entries / rdb.stats / rdb.restore against a server filled with every type and encoding (ESM import).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, writeFile, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { rdb, FerryError } from 'redis-ferry'
import { startServers, fill, compare, client } from './helpers.mjs'

let server, redis, file, report, dir
const hex = (b) => Buffer.from(b).toString('hex')

before(async () => {
  server = await startServers('standalone')
  report = await fill(`redis://${server.addr}`)
  redis = client(server.addr)
  await redis.save()
  const [, d] = await redis.config('GET', 'dir')
  const [, name] = await redis.config('GET', 'dbfilename')
  file = join(d, name)
  dir = await mkdtemp(join(tmpdir(), 'ferry-node-rdb-'))
})

after(async () => {
  redis?.disconnect()
  await server?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** What the server holds for `key` in `db`, in the shape rdb.entries gives. */
async function live(db, key, type) {
  await redis.select(db)
  switch (type) {
    case 'string':
      return redis.getBuffer(key)
    case 'list':
      return redis.lrangeBuffer(key, 0, -1)
    case 'set':
      return redis.smembersBuffer(key)
    case 'zset': {
      const flat = await redis.zrangeBuffer(key, 0, -1, 'WITHSCORES')
      const out = []
      for (let i = 0; i < flat.length; i += 2) out.push({ member: flat[i], score: Number(parseScore(flat[i + 1])) })
      return out
    }
    case 'hash': {
      const flat = await redis.hgetallBuffer(key)
      return Object.entries(flat).map(([f, v]) => ({ field: Buffer.from(f), value: v }))
    }
    case 'stream':
      return redis.xrangeBuffer(key, '-', '+')
    default:
      throw new Error(`unexpected type ${type}`)
  }
}

function parseScore(b) {
  const s = b.toString()
  if (s === 'inf') return Infinity
  if (s === '-inf') return -Infinity
  return Number(s)
}

const sortedHex = (items) => items.map(hex).sort()

test('rdb.entries yields every key of a filled server with the values the server holds', async () => {
  let count = 0
  const types = new Set()
  for await (const e of rdb.entries(file)) {
    count++
    types.add(e.type)
    assert.ok(Buffer.isBuffer(e.key))
    const db = Number(e.db)
    const want = await live(db, e.key, e.type)
    const where = `db ${db} key ${e.key.toString('latin1')}`
    switch (e.type) {
      case 'string':
        assert.ok(Buffer.isBuffer(e.value))
        assert.equal(hex(e.value), hex(want), where)
        break
      case 'list':
        assert.deepEqual(e.value.map(hex), want.map(hex), where)
        break
      case 'set':
        assert.deepEqual(sortedHex(e.value), sortedHex(want), where)
        break
      case 'zset': {
        // In ZRANGE order, whatever order the file holds the members in.
        const pairs = (xs) => xs.map((x) => `${hex(x.member)}=${x.score}`)
        assert.deepEqual(pairs(e.value), pairs(want), where)
        break
      }
      case 'hash': {
        const norm = (xs) => xs.map((x) => `${hex(x.field)}=${hex(x.value)}`).sort()
        assert.deepEqual(norm(e.value), norm(want), where)
        break
      }
      case 'stream': {
        assert.deepEqual(
          e.value.entries.map((x) => [x.id, x.fields.map(([f, v]) => [hex(f), hex(v)])]),
          want.map(([id, fields]) => {
            const pairs = []
            for (let i = 0; i < fields.length; i += 2) pairs.push([hex(fields[i]), hex(fields[i + 1])])
            return [id.toString(), pairs]
          }),
          where,
        )
        const info = await redis.xinfo('STREAM', e.key)
        const field = (name) => info[info.indexOf(name) + 1]
        assert.equal(e.value.lastId, field('last-generated-id'), where)
        assert.equal(Number(e.value.length), field('length'), where)
        const groups = await redis.xinfo('GROUPS', e.key)
        assert.equal(e.value.groups.length, groups.length, where)
        for (const g of groups) {
          const get = (name) => g[g.indexOf(name) + 1]
          const mine = e.value.groups.find((x) => x.name.toString() === get('name'))
          assert.ok(mine, `${where}: group ${get('name')}`)
          assert.equal(mine.lastId, get('last-delivered-id'), where)
          assert.equal(mine.pending.length, get('pending'), where)
          assert.equal(mine.consumers.length, get('consumers'), where)
        }
        break
      }
      default:
        assert.fail(`${where}: unexpected type ${e.type}`)
    }
    // Expiry: absolute ms, exactly what the server has (PEXPIRETIME, 7.0).
    const at = await redis.call('PEXPIRETIME', e.key)
    assert.equal(e.expireAt === null ? -1 : Number(e.expireAt), at, `${where}: expiry`)
  }
  assert.equal(count, report.total_keys)
  for (const t of ['string', 'list', 'set', 'zset', 'hash', 'stream']) assert.ok(types.has(t), `type ${t} seen`)
})

test('rdb.stats counts the keys and types of the file', async () => {
  const s = await rdb.stats(file)
  assert.equal(s.keys, report.total_keys)
  assert.equal(s.keys_with_expiry, report.keys_with_expiry)
  for (const [db, byType] of Object.entries(report.keys)) {
    for (const [type, n] of Object.entries(byType)) assert.equal(s.per_db[db][type].keys, n, `db ${db} ${type}`)
  }
  assert.equal(s.checksum, 'verified')
})

test('rdb.restore writes the file into another server, which then equals the source', async () => {
  const target = await startServers('standalone')
  try {
    const r = await rdb.restore(file, `redis://${target.addr}`)
    assert.equal(r.keys_restored, report.total_keys)
    const cmp = await compare(`redis://${server.addr}`, `redis://${target.addr}`)
    assert.equal(cmp.equal, true, JSON.stringify(cmp.differences ?? cmp))
    // A second restore meets existing keys; the default conflict policy refuses them.
    await assert.rejects(rdb.restore(file, `redis://${target.addr}`), (err) => {
      assert.ok(err instanceof FerryError)
      assert.equal(err.code, 'FERRY_TARGET_REFUSED')
      return true
    })
  } finally {
    await target.stop()
  }
})

test('rdb.restore follows target_policy for keys the target cannot hold and reports them', async () => {
  const source = await startServers('standalone', '--version', '8.2')
  const target = await startServers('standalone', '--version', '7.0')
  const s = client(source.addr)
  const t = client(target.addr)
  try {
    await s.hset('h', 'plain', '1', 'expiring', '2')
    await s.call('HPEXPIREAT', 'h', '4102444800000', 'FIELDS', '1', 'expiring')
    await s.set('s', 'x')
    await s.save()
    const [, d] = await s.config('GET', 'dir')
    const [, name] = await s.config('GET', 'dbfilename')
    const hfe = join(dir, 'hfe.rdb')
    await writeFile(hfe, await readFile(join(d, name)))
    const url = `redis://${target.addr}`
    await assert.rejects(rdb.restore(hfe, url), (err) => {
      assert.equal(err.code, 'FERRY_TARGET_REFUSED')
      assert.match(err.message, /"h"/)
      return true
    })
    await t.flushall()
    const skipped = await rdb.restore(hfe, url, { target_policy: 'skip' })
    assert.equal(skipped.policy.keys_skipped, 1)
    assert.deepEqual(skipped.policy.skipped.map((k) => [k.db, k.key]), [[0, '"h"']])
    assert.equal(await t.exists('h'), 0)
    assert.equal(await t.get('s'), 'x')
    await t.flushall()
    const converted = await rdb.restore(hfe, url, { target_policy: 'convert' })
    assert.equal(converted.policy.keys_converted, 1)
    assert.deepEqual(await t.hgetall('h'), { plain: '1', expiring: '2' })
  } finally {
    s.disconnect()
    t.disconnect()
    await source.stop()
    await target.stop()
  }
})

test('a truncated RDB file rejects the iteration with FERRY_DATA', async () => {
  const whole = await readFile(file)
  const cut = join(dir, 'cut.rdb')
  await writeFile(cut, whole.subarray(0, Math.floor(whole.length / 2)))
  await assert.rejects(
    (async () => {
      for await (const _ of rdb.entries(cut)) {
        // read to the end
      }
    })(),
    { name: 'FerryError', code: 'FERRY_DATA' },
  )
})
