# cmake/cloacina_warnings.cmake — the warnings every C++ target of the project compiles with.
# Warnings are errors only when asked (-DCLOACINA_WERROR=ON; CI does): a shipped build must not
# break on a newer compiler's new warning. Sets CLOACINA_WARNINGS.
option(CLOACINA_WERROR "Treat compiler warnings as errors (CI sets it)" OFF)
set(CLOACINA_WARNINGS -Wall -Wextra -Wpedantic)
if(CLOACINA_WERROR)
    list(APPEND CLOACINA_WARNINGS -Werror)
endif()
