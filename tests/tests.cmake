# Tests: C unit tests of the parsers, Lua tests run by the host against a
# sluice-mock started for each test (tests/run_lua_test.sh).
file(GLOB UNIT_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/test_*.c)
foreach(src ${UNIT_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE sluice_core)
  add_test(NAME unit.${name} COMMAND ${name})
endforeach()

# faultproxy: the suite's fault-injecting TCP proxy (latency, stalls, resets,
# half-closes, trickled bytes) between sluice and the mock; the Lua tests find
# it through SLUICE_FAULTPROXY_BIN (tests/run_lua_test.sh).
add_executable(faultproxy ${CMAKE_CURRENT_SOURCE_DIR}/tests/tools/faultproxy.c)
target_link_libraries(faultproxy PRIVATE PkgConfig::UV)

file(GLOB LUA_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/lua/test_*.lua)
foreach(src ${LUA_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME lua.${name}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/run_lua_test.sh
            $<TARGET_FILE:sluice> $<TARGET_FILE:sluice-mock> ${src} $<TARGET_FILE:faultproxy>)
  set_tests_properties(lua.${name} PROPERTIES TIMEOUT 120)
endforeach()

add_test(NAME mock.smoke COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/mock_smoke.sh $<TARGET_FILE:sluice-mock>)
set_tests_properties(mock.smoke PROPERTIES TIMEOUT 60)

# The installed tree works on its own: sluice finds lua/ next to it.
add_test(NAME install.tree COMMAND sh -c
  "d=$(mktemp -d) && cmake --install '${CMAKE_BINARY_DIR}' --prefix \"$d\" >/dev/null && \
   cd / && \"$d/bin/sluice\" -e 'require \"sluice.openai\"; require \"sluice.policy\"; \
   assert(require(\"sluice\").executable:find(\"/bin/sluice\", 1, true)); print(\"installed tree ok\")' && \
   test -x \"$d/bin/sluice-mock\"; s=$?; rm -rf \"$d\"; exit $s")
set_tests_properties(install.tree PROPERTIES PASS_REGULAR_EXPRESSION "installed tree ok")
