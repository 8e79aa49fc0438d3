-- The batch script of commit 338d5f9 (a marker `0 offset` after each unit, the checkpoint formatted in the
-- script), kept so benches/chain.rs can measure it beside the current one in the same run.
local TRANSIENT = {}
redis.call('SELECT', ARGV[1])
local stored = redis.call('GET', KEYS[1])
if (stored or '') ~= ARGV[2] then return {-1, stored or ''} end
local tpl, log = ARGV[3], ARGV[4] == '1'
local off, db, part = ARGV[5], ARGV[6], tonumber(ARGV[7])
local cur, n, logged = ARGV[1], 0, {}
local function store()
  redis.call('SELECT', ARGV[1])
  local v = string.gsub(tpl, '{o}', off)
  v = string.gsub(v, '{d}', db)
  v = string.gsub(v, '{p}', tostring(part))
  redis.call('SET', KEYS[1], v)
end
local function transient(e)
  for _, code in ipairs(TRANSIENT) do
    local next = string.sub(e, #code + 1, #code + 1)
    if string.sub(e, 1, #code) == code and (next == '' or next == ' ' or string.find(code, ' ', 1, true)) then
      return true
    end
  end
  return false
end
local function fail(e)
  if n > 0 then store() end
  local out = {n, e}
  for _, v in ipairs(logged) do out[#out + 1] = v end
  return out
end
local i, last, pcall, unpack, tonumber = 8, #ARGV, redis.pcall, unpack, tonumber
while i <= last do
  local c = tonumber(ARGV[i])
  if c > 0 then
    local r = pcall(unpack(ARGV, i + 1, i + c))
    if type(r) == 'table' and r.err then
      -- Redis 6.2 prefixes the error with the script's place: "@user_script: 3: -OOM ...".
      local e = string.gsub(string.gsub(r.err, '^@user_script: %d+: %-', ''), '%s+$', '')
      if not log or transient(e) then return fail(e) end
      logged[#logged + 1] = n
      logged[#logged + 1] = e
    end
    n = n + 1
    part = part + 1
    i = i + c + 1
  elseif c == 0 then
    off, part, i = ARGV[i + 1], 0, i + 2
  elseif c == -1 then
    local r = redis.pcall('SELECT', ARGV[i + 1])
    if type(r) == 'table' and r.err then
      return fail(string.gsub(string.gsub(r.err, '^@user_script: %d+: %-', ''), '%s+$', ''))
    end
    cur, i = ARGV[i + 1], i + 2
  elseif c == -2 then
    db, i = ARGV[i + 1], i + 2
  else
    redis.call('SELECT', ARGV[i + 1])
    redis.call('DEL', KEYS[1])
    redis.call('SELECT', cur)
    i = i + 2
  end
end
store()
local out = {n, ''}
for _, v in ipairs(logged) do out[#out + 1] = v end
return out
