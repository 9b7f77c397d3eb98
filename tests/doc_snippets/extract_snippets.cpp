// extract_snippets.cpp — turns the ```cpp blocks of a Markdown file into one C++ translation unit,
// so that the build fails when the documentation's code does not compile.
//
//   extract_snippets <doc.md> <out.cpp>
//
// Each block lands in a namespace of its own (doc_snippet_<n>), inside a function body unless the
// line before its fence is `<!-- compiled at file scope -->` (declarations, CLOACINA_TASK, ...).
// #line directives point compiler messages at the Markdown file's own lines. The unit includes
// doc_prelude.hpp, which declares what the text around the blocks takes as given.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace {

std::string trimmed(const std::string& line) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) return {};
    const auto last = line.find_last_not_of(" \t\r");
    return line.substr(first, last - first + 1);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: extract_snippets <doc.md> <out.cpp>\n";
        return 2;
    }
    const std::string doc = argv[1];
    std::ifstream in(doc);
    if (!in) {
        std::cerr << "extract_snippets: cannot read " << doc << "\n";
        return 1;
    }
    std::ostringstream out;
    out << "// Generated from " << doc << " by extract_snippets: do not edit.\n"
        << "#include \"doc_prelude.hpp\"\n";
    std::string line, previous;
    int number = 0, blocks = 0;
    bool in_block = false, file_scope = false;
    while (std::getline(in, line)) {
        ++number;
        const std::string text = trimmed(line);
        if (!in_block && text == "```cpp") {
            in_block = true;
            file_scope = previous == "<!-- compiled at file scope -->";
            ++blocks;
            out << "\nnamespace doc_snippet_" << blocks << " {\n";
            if (!file_scope) out << "[[maybe_unused]] void snippet() {\n";
            out << "#line " << number + 1 << " \"" << doc << "\"\n";
        } else if (in_block && text == "```") {
            in_block = false;
            if (!file_scope) out << "}\n";
            out << "}  // namespace doc_snippet_" << blocks << "\n";
        } else if (in_block) {
            out << line << "\n";
        }
        if (!text.empty()) previous = text;
    }
    if (in_block) {
        std::cerr << doc << ":" << number << ": a ```cpp block is not closed\n";
        return 1;
    }
    std::ofstream file(argv[2]);
    file << out.str();
    if (!file) {
        std::cerr << "extract_snippets: cannot write " << argv[2] << "\n";
        return 1;
    }
    return 0;
}
