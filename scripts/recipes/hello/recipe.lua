-- A busybox tool image: moonbox build scripts/recipes/hello/recipe.lua
return recipe "hello:1" {
  from "busybox",
  copy("app/", "/app"),
  run "chmod +x /app/start.sh",
  env { MODE = "prod" },
  workdir "/app",
  cmd { "/app/start.sh" },
}
