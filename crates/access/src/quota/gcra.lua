-- ferry: a batch of GCRA operations over KEYS, atomic (see src/quota/gcra.rs for the model).
-- ARGV holds four values per key: interval_us, tolerance_us, cost, mode
-- (take | require | peek | debit | reserve | refund). Time is the Redis server's, so replicas agree.
-- Returns two integers per key: allowed (1/0) and the wait in microseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, news, ok = {}, {}, true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[4 * i - 3])
  local tolerance = tonumber(ARGV[4 * i - 2])
  local cost = tonumber(ARGV[4 * i - 1])
  local mode = ARGV[4 * i]
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new = tat + cost * interval
  if mode == 'refund' then new = math.max(now, tat - cost * interval) end
  local allowed, wait = 1, 0
  if mode == 'reserve' and tat - now > tolerance then
    allowed, wait = 0, tat - now - tolerance
  elseif mode == 'take' and new - now > tolerance then
    allowed, wait = 0, new - now - tolerance
  elseif (mode == 'require' or mode == 'peek') and new - now > tolerance then
    allowed, wait = 0, new - now - tolerance
  elseif mode == 'debit' then
    wait = math.max(0, new - now - tolerance)
  end
  if allowed == 0 and mode ~= 'peek' then ok = false end
  news[i] = new
  out[2 * i - 1] = allowed
  out[2 * i] = math.ceil(wait)
end
for i = 1, #KEYS do
  local mode = ARGV[4 * i]
  if mode == 'debit' or mode == 'refund' or ((mode == 'take' or mode == 'reserve') and ok) then
    local ttl = math.ceil((news[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', ttl)
  end
end
return out
