-- redis-server and redis-benchmark from Debian bookworm (debootstrap, then apt in a RUN step).
--   moonbox build scripts/experiments/recipes/redis.lua
return recipe "exp-redis:7" {
  from(debootstrap("bookworm", { variant = "minbase" })),
  run "apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools && rm -rf /var/lib/apt/lists/*",
  cmd { "redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no" },
}
