-- A Debian image: a minbase debootstrap of bookworm (needs debootstrap and Debian's mirror,
-- a few minutes), as a rootfs tarball, then a package on top.
--   moonbox build scripts/recipes/debian.lua
-- The tarball comes from: debootstrap --variant=minbase bookworm DIR && tar -C DIR -czf bookworm.tar.gz .
local tarball = os.getenv("BOOKWORM_TAR") or "/var/tmp/bookworm-minbase.tar.gz"
return recipe "debian-curl:bookworm" {
  from(tarball),
  run "apt-get update && apt-get install -y --no-install-recommends curl ca-certificates && rm -rf /var/lib/apt/lists/*",
  cmd { "curl", "--version" },
}
