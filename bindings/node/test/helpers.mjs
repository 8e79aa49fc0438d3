// Shared by the tests: real servers through testkit's binary, a plain client (ioredis, a dev dependency of the
// package's source tree, not of the package), and waiting for conditions with deadlines.
//
// The tests run from a temporary project where scripts/node-env.sh installed the packed tarball, so
// `import ... from 'redis-ferry'` is what a user's project gets. FERRY_NODE_DEV is the package's source dir
// (its node_modules has ioredis and typescript), FERRY_TESTKIT the testkit binary.
import { spawn, execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { promisify } from 'node:util'

export const DEV = process.env.FERRY_NODE_DEV
export const TESTKIT = process.env.FERRY_TESTKIT
if (!DEV || !TESTKIT) throw new Error('run the Node tests through `scripts/node-env.sh test` (make test)')

const devRequire = createRequire(join(DEV, 'package.json'))
/** ioredis, from the source tree's dev dependencies. */
export const Redis = devRequire('ioredis')
/** Where devRequire resolves from (typescript's tsc for the typing test). */
export const devResolve = (id) => devRequire.resolve(id)

const run = promisify(execFile)

/**
 * Starts `ferry-testkit start <kind> ...args` and resolves the addresses it prints. `stop()` closes its stdin,
 * which stops every server, and resolves when the process is gone.
 */
export async function startServers(kind, ...args) {
  const child = spawn(TESTKIT, ['start', kind, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const lines = createInterface({ input: child.stdout })
  const first = await new Promise((resolve, reject) => {
    lines.once('line', resolve)
    child.once('exit', (code) => reject(new Error(`ferry-testkit start ${kind} exited with ${code}`)))
  })
  lines.close()
  const info = JSON.parse(first)
  info.stop = async () => {
    child.stdin.end()
    await exited
  }
  return info
}

/** `ferry-testkit fill <url>`: every type and encoding; resolves the fill report. */
export async function fill(url, ...args) {
  const { stdout } = await run(TESTKIT, ['fill', url, ...args], { maxBuffer: 64 << 20 })
  return JSON.parse(stdout)
}

/** `ferry-testkit compare <a> <b>`: resolves the report (`equal`, differences). */
export async function compare(a, b, ...args) {
  const { stdout } = await run(TESTKIT, ['compare', a, b, ...args], { maxBuffer: 64 << 20 })
  return JSON.parse(stdout)
}

/** A plain client for `host:port`. */
export function client(addr, options = {}) {
  const [host, port] = addr.split(':')
  return new Redis({ host, port: Number(port), lazyConnect: false, maxRetriesPerRequest: 1, ...options })
}

/** Polls `check` until it returns a truthy value (resolved), failing after `ms` with `what`. No fixed sleeps. */
export async function eventually(what, check, ms = 60_000) {
  const deadline = Date.now() + ms
  let last
  for (;;) {
    try {
      const v = await check()
      if (v) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`)
    }
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** The checkpoint keys ferry keeps in a target; compare skips them. */
export const CHECKPOINT_PREFIX = 'ferry:checkpoint'
