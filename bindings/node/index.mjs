// ESM entry point of redis-ferry: the same objects as the CommonJS entry (index.js), so both module systems in
// one process share one native module and one class identity.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const ferry = require('./index.js')

export const { SyncJob, SentinelPool, DrPair, DrRun, FerryError, ReplyError, verify, rdb, codes } = ferry
