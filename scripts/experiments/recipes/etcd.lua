-- etcd (server and etcdctl) from Debian bookworm (debootstrap, then apt in a RUN step).
--   moonbox build scripts/experiments/recipes/etcd.lua
return recipe "exp-etcd:3.4" {
  from(debootstrap("bookworm", { variant = "minbase" })),
  run "apt-get update -qq && apt-get install -y -qq --no-install-recommends etcd-server etcd-client && rm -rf /var/lib/apt/lists/*",
  cmd { "etcd", "--version" },
}
