// Anchors the precompiled torch header; see CMakeLists.txt beside it.
