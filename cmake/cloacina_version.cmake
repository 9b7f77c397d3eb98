# cmake/cloacina_version.cmake — the one version source is cloacina.control (default_version); the
# SDK's CMake projects read it from there. Sets CLOACINA_VERSION.
file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../cloacina.control" _cloacina_control REGEX "^default_version")
string(REGEX REPLACE "^default_version *= *'([0-9]+\\.[0-9]+\\.[0-9]+)'.*$" "\\1" CLOACINA_VERSION "${_cloacina_control}")
if(NOT CLOACINA_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
    message(FATAL_ERROR "cannot read default_version from cloacina.control")
endif()
# a new version in the control file reconfigures the build
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${CMAKE_CURRENT_LIST_DIR}/../cloacina.control")
