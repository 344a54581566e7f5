// MathJax 3 settings for pymdownx.arithmatex (generic mode), which wraps inline maths in
// \( \) and display maths in \[ \] inside elements of class "arithmatex".
// The script itself, docs/javascripts/mathjax/tex-svg-full.js, is vendored (MathJax 3.2.2,
// Apache-2.0, from the django-static-mathjax 3.2.2.1 wheel): the site needs no network.
// "tex-svg-full" bundles every TeX package and draws glyphs as SVG paths, so it loads no
// extension or font files at run time.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
    // The accessibility explorer would fetch the speech-rule engine; keep it off.
    menuOptions: { settings: { explorer: false, assistiveMml: false } },
  },
};
