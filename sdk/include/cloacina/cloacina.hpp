// cloacina/cloacina.hpp — umbrella header of the cloacina C++ SDK.
#pragma once

#include "cloacina/cancellation.hpp"
#include "cloacina/connection.hpp"
#include "cloacina/context.hpp"
#include "cloacina/database.hpp"
#include "cloacina/error.hpp"
#include "cloacina/log.hpp"
#include "cloacina/runner.hpp"
#include "cloacina/signal.hpp"
#include "cloacina/version.hpp"
#include "cloacina/workflow.hpp"
