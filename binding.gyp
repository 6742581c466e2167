{
  # The CPU addon: what `npm install` compiles through node-gyp-build when no
  # prebuild matches, and what prebuildify packs into prebuilds/. It uses the
  # machine's Node headers and downloads nothing. Sources are globbed so an op
  # is added by adding its files. The CUDA-enabled addon is built by CMakeLists.txt.
  "targets": [
    {
      "target_name": "mstar",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('cpp/core').filter(f=>f.endsWith('.cc')).map(f=>'cpp/core/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('cpp/ops').filter(f=>f.endsWith('.cc')).map(f=>'cpp/ops/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('cpp/binding').filter(f=>f.endsWith('.cc')).map(f=>'cpp/binding/'+f).join(' ')\")"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2", "-std=gnu++17"],
      "cflags": ["-O3", "-fvisibility=hidden", "-fno-math-errno"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-frtti", "-fvisibility=hidden", "-fno-math-errno"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["OS=='linux' and '<!(sh -c \"pkg-config --exists openslide && echo yes || echo no\")'=='yes'", {
          "defines": ["MSTAR_WITH_OPENSLIDE"],
          "cflags_cc": ["<!@(pkg-config --cflags openslide)"],
          "libraries": ["<!@(pkg-config --libs openslide)"]
        }]
      ]
    }
  ]
}
