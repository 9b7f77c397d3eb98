// version.cpp — which extension versions this SDK works with.
#include "cloacina/version.hpp"

#include <charconv>
#include <utility>

namespace cloacina {
namespace {

// "major.minor[.patch...]" as (major, minor); (-1, -1) when it is not a version.
std::pair<int, int> major_minor(std::string_view version) noexcept {
    int major = -1;
    int minor = -1;
    const char* end = version.data() + version.size();
    auto [p, ec] = std::from_chars(version.data(), end, major);
    if (ec != std::errc{} || p == end || *p != '.') return {-1, -1};
    auto [q, ec2] = std::from_chars(p + 1, end, minor);
    if (ec2 != std::errc{} || (q != end && *q != '.')) return {-1, -1};
    return {major, minor};
}

}  // namespace

bool server_version_supported(std::string_view server_version) noexcept {
    const auto server = major_minor(server_version);
    const auto oldest = major_minor(kOldestSupportedServer);
    const std::pair<int, int> sdk{CLOACINA_SDK_VERSION_MAJOR, CLOACINA_SDK_VERSION_MINOR};
    return server.first >= 0 && server >= oldest && server <= sdk;
}

bool server_version_at_least(std::string_view server_version, int major, int minor) noexcept {
    const auto server = major_minor(server_version);
    return server.first >= 0 && server >= std::pair<int, int>{major, minor};
}

}  // namespace cloacina
