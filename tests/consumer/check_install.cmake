# tests/consumer/check_install.cmake — ctest script: installs the SDK from the build tree into a
# scratch prefix, then builds and runs the consumer twice: through find_package(cloacina) and
# through pkg-config (cloacina.pc). Inputs: BUILD_DIR, SOURCE_DIR, WORK_DIR, CXX.
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR CXX)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "${var} is not set")
    endif()
endforeach()
if(NOT DEFINED ENV{DATABASE_URL} OR "$ENV{DATABASE_URL}" STREQUAL "")
    message(FATAL_ERROR "DATABASE_URL is not set: the consumer runs against the server")
endif()

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc}): ${ARGN}")
    endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# 1. find_package(cloacina)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
    -DCLOACINA_EXPECTED_VERSION=${EXPECTED_VERSION})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)

# 2. pkg-config
file(GLOB pc_file ${prefix}/lib*/pkgconfig/cloacina.pc ${prefix}/lib/*/pkgconfig/cloacina.pc)
if(NOT pc_file)
    message(FATAL_ERROR "cloacina.pc was not installed under ${prefix}")
endif()
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
execute_process(COMMAND pkg-config --cflags --libs cloacina OUTPUT_VARIABLE flags RESULT_VARIABLE rc
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config cannot resolve cloacina")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
run(${CXX} ${SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer_pc ${flags})
run(${WORK_DIR}/consumer_pc)
