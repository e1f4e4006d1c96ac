# The native addon (common/native/index.ts loads it): SO_ORIGINAL_DST for the proxy, transparent listening sockets for the node agent. Built by scripts/build-native.js
# during `npm run build`, against the headers of the Node that runs the build (never downloaded).
{
  "targets": [
    {
      "target_name": "sail_native",
      "sources": ["sail-native.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
