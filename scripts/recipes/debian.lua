-- A Debian image without a registry: debootstrap of bookworm (minbase), then a package on top.
--   moonbox build scripts/recipes/debian.lua      (a few minutes the first time: debootstrap
--                                                  downloads Debian; the base is then kept)
return recipe "debian-tools:bookworm" {
  from(debootstrap("bookworm", { variant = "minbase" })),
  run "apt-get update -qq && apt-get install -y -qq --no-install-recommends jq && rm -rf /var/lib/apt/lists/*",
  cmd { "jq", "--version" },
}
