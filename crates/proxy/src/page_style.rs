//! The one style sheet of SafeGate's pages: the admin interface and the block page
//! share it, so a child's block page looks like the school's own SafeGate pages.
//! Colours meet WCAG 2.2 AA contrast (white on #1d3557 is 12:1, #b00020 on white 7:1).

/// The style sheet, inlined in every page (`style-src 'unsafe-inline'`, nothing
/// fetched).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9}\
header{background:#1d3557;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:1rem;align-items:center}\
header a{color:#fff}header form{margin-left:auto}main{padding:1rem;max-width:70rem}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #ccd;padding:.3rem .5rem;text-align:left;vertical-align:top}\
pre{white-space:pre-wrap;word-break:break-all;margin:0}.bad{color:#b00020;font-weight:bold}.ok{color:#1b7f3b;font-weight:bold}\
label{display:block;margin:.5rem 0}input{font-size:1rem;padding:.3rem}button{font-size:1rem;padding:.3rem .8rem}\
a:focus,button:focus,textarea:focus,summary:focus,input:focus{outline:3px solid #f4a000;outline-offset:2px}\
table.audit td:nth-child(5){max-width:22ch;word-break:break-all}table.audit td:nth-child(6){min-width:45ch}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:1rem;margin:1rem 0}\
.card{background:#fff;border:1px solid #ccd;border-radius:.4rem;padding:.8rem}.card h2{font-size:1.05rem;margin:0 0 .5rem}\
.big{font-size:1.6rem;font-weight:bold}.muted{color:#555}\
.child{max-width:44rem;font-size:1.15rem;line-height:1.5}.child .logo{max-height:5rem;max-width:12rem}\
.child textarea{width:100%;font-size:1rem}.child code{word-break:break-all}\
.message{background:#fff;border-left:.4rem solid #1d3557;padding:.5rem 1rem}\
footer{padding:1rem;color:#555;font-size:.9rem}\
@media print{header{display:none}}";
