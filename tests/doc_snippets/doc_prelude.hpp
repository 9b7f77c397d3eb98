// doc_prelude.hpp — what the code blocks of docs/sdk.md take as given: the SDK as a reader's program
// uses it (`using namespace cloacina`), chrono literals, and the variables the text around the blocks
// introduces. Declarations only: the blocks are compiled, never linked or run.
#pragma once

#include <cloacina/cloacina.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <vector>

using namespace cloacina;
using namespace std::chrono_literals;

extern const std::string database_url;        // an admin URL (the seed's DATABASE_URL)
extern const std::string admin_database_url;  // the same, in the seed's advanced.rs
extern const TenantCredentials credentials;   // what create_tenant returned
