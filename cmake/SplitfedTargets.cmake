# One place for compile flags: applied per target, never globally.
function(splitfed_target_options target)
  # -pthread everywhere: gRPC adds it to its users, and the shared precompiled header is only
  # valid for targets compiled with the same definitions (it defines _REENTRANT).
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -pthread)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  # The checking builds instrument every target alike (the shared precompiled header needs the
  # same flags everywhere); the link options travel to whatever links a library.
  if(SPLITFED_FUZZ)
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                                             -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  elseif(SPLITFED_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined
                                             -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  endif()
endfunction()

# Torch-heavy targets reuse the precompiled header built by cmake/pch.
function(splitfed_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM splitfed_torch_pch)
endfunction()
