# The SO_ORIGINAL_DST addon (proxy/native/index.ts loads it). Built by scripts/build-native.js
# during `npm run build`, against the headers of the Node that runs the build (never downloaded).
{
  "targets": [
    {
      "target_name": "sail_native",
      "sources": ["original-dst.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
